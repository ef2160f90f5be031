"""Trigger transports by URL: ``log:``, ``log:/path``, ``http(s)://...``, ``nats://...``."""

from __future__ import annotations

from phasegate.drivers import require_driver
from phasegate.errors import ConfigError
from phasegate.transports.base import TriggerTransport

_NOT_YET = frozenset({"pubsub"})


def open_transport(url: str) -> TriggerTransport:
    """Open the transport named by ``url``."""
    scheme = url.split(":", 1)[0].lower()
    if scheme in _NOT_YET:
        # Said first: installing a driver would not help. Remove a scheme from
        # _NOT_YET when its transport lands; the driver check below then covers it.
        raise ConfigError(
            f"trigger transport {scheme}:// is not available in this release yet; "
            "use log:, http(s):// or nats://"
        )
    # Before importing the transport: a missing driver is a clear error, not a traceback.
    require_driver(scheme)
    if scheme == "log":
        from phasegate.transports.log import LogTransport  # noqa: PLC0415

        path = url[len("log:") :]
        return LogTransport(path or None)
    if scheme in {"http", "https"}:
        from phasegate.transports.http import HttpTransport  # noqa: PLC0415

        return HttpTransport(url)
    if scheme == "nats":
        from phasegate.transports.nats import NatsTransport  # noqa: PLC0415

        return NatsTransport(url)
    raise ConfigError(
        f"unsupported trigger transport {scheme!r}; expected log:, http(s):// or nats://"
    )


__all__ = ["TriggerTransport", "open_transport"]
