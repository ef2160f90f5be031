"""The protocol every trigger transport implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from phasegate.model import Trigger


@runtime_checkable
class TriggerTransport(Protocol):
    """Hands a trigger to whatever runs the next phase.

    ``deliver`` returns once the receiver has accepted the trigger, raises
    ``TransientDeliveryError`` when trying again may work and ``DeliveryError``
    otherwise. The trigger id travels with every delivery so receivers de-duplicate.
    """

    def deliver(self, trigger: Trigger) -> None:
        """Deliver ``trigger`` (at least once; its id is the idempotency key)."""
        ...

    def ping(self) -> None:
        """Raise when the transport cannot deliver right now (health checks)."""
        ...

    def describe(self) -> str:
        """Where triggers go, safe to print (no credentials)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
