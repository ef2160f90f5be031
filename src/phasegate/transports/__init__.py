"""Trigger transports by URL: ``log:``, ``log:/path``, ``http(s)://...``, ``nats://...``."""

from __future__ import annotations

from phasegate.errors import ConfigError
from phasegate.transports.base import TriggerTransport


def open_transport(url: str) -> TriggerTransport:
    """Open the transport named by ``url``."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "log":
        from phasegate.transports.log import LogTransport  # noqa: PLC0415

        path = url[len("log:") :]
        return LogTransport(path or None)
    if scheme in {"http", "https"}:
        from phasegate.transports.http import HttpTransport  # noqa: PLC0415

        return HttpTransport(url)
    if scheme == "nats":
        try:
            from phasegate.transports.nats import NatsTransport  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigError(
                f"trigger transport nats:// needs nats-py ({exc.name or 'nats'} is not "
                "installed): pip install 'phasegate[nats]'"
            ) from None
        return NatsTransport(url)
    if scheme == "pubsub":
        raise ConfigError(
            "trigger transport pubsub:// is not available in this release yet; "
            "use log:, http(s):// or nats://"
        )
    raise ConfigError(
        f"unsupported trigger transport {scheme!r}; expected log:, http(s):// or nats://"
    )


__all__ = ["TriggerTransport", "open_transport"]
