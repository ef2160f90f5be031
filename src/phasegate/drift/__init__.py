"""Deployment drift: is what runs what is in git?"""

from phasegate.drift.config import DriftConfig, ServiceSources, load_drift
from phasegate.drift.core import DriftReport, DriftStatus, ServiceDrift, check_drift
from phasegate.drift.providers import Deployment, DeploymentProvider, open_provider

__all__ = [
    "Deployment",
    "DeploymentProvider",
    "DriftConfig",
    "DriftReport",
    "DriftStatus",
    "ServiceDrift",
    "ServiceSources",
    "check_drift",
    "load_drift",
    "open_provider",
]
