"""Trigger transports by URL: ``log:``, ``log:/path``, ``http(s)://...``, ``nats://...``,
``pubsub://PROJECT/TOPIC``."""

from __future__ import annotations

from phasegate.drivers import require_driver
from phasegate.errors import ConfigError
from phasegate.transports.base import BatchTriggerTransport, TriggerTransport, deliver_each


def open_transport(url: str) -> TriggerTransport:
    """Open the transport named by ``url``."""
    scheme = url.split(":", 1)[0].lower()
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
    if scheme == "pubsub":
        from phasegate.transports.pubsub import PubSubTransport  # noqa: PLC0415

        return PubSubTransport(url)
    raise ConfigError(
        f"unsupported trigger transport {scheme!r}; expected log:, http(s)://, nats:// or pubsub://"
    )


__all__ = ["BatchTriggerTransport", "TriggerTransport", "deliver_each", "open_transport"]
