"""Trigger transports by URL: ``log:``, ``log:/path``, ``http(s)://...``, ``pubsub://P/T``."""

from __future__ import annotations

from phasegate.errors import ConfigError
from phasegate.transports.base import BatchTriggerTransport, TriggerTransport, deliver_each


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
    if scheme == "pubsub":
        try:
            from phasegate.transports.pubsub import PubSubTransport  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigError(
                f"trigger transport pubsub:// needs the Google Cloud Pub/Sub client ({exc.name} "
                "is missing): pip install 'phasegate[gcp]'"
            ) from None
        return PubSubTransport(url)
    if scheme == "nats":
        raise ConfigError(
            f"trigger transport {scheme}:// is not available in this release yet; "
            "use log:, http(s):// or pubsub://"
        )
    raise ConfigError(
        f"unsupported trigger transport {scheme!r}; expected log:, http(s):// or pubsub://"
    )


__all__ = ["BatchTriggerTransport", "TriggerTransport", "deliver_each", "open_transport"]
