"""What every route module needs: the runtime, health, metrics and the tokens."""

from __future__ import annotations

from dataclasses import dataclass

from phasegate.health import HealthChecker
from phasegate.metrics import Metrics
from phasegate.runtime import Runtime
from phasegate.service.auth import Auth


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """The collaborators a route module's ``router(context)`` is built over."""

    runtime: Runtime
    health: HealthChecker
    metrics: Metrics
    auth: Auth
