"""The HTTP service: API, health, metrics and dashboard over a runtime."""

from phasegate.service.app import create_app

__all__ = ["create_app"]
