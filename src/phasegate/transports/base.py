"""The protocol every trigger transport implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from phasegate.errors import DeliveryError
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


@runtime_checkable
class BatchTriggerTransport(TriggerTransport, Protocol):
    """A transport that can hand several triggers over in one round trip (optional)."""

    def deliver_many(self, triggers: Sequence[Trigger]) -> list[DeliveryError | None]:
        """Deliver each trigger; one outcome per trigger, in order (``None`` = delivered)."""
        ...


def deliver_each(
    transport: TriggerTransport, triggers: Sequence[Trigger]
) -> list[DeliveryError | None]:
    """``transport.deliver_many`` when it has one, else ``deliver`` in a loop; never raises
    a :class:`DeliveryError` (it is returned in the trigger's place)."""
    if isinstance(transport, BatchTriggerTransport):
        return transport.deliver_many(triggers)
    outcomes: list[DeliveryError | None] = []
    for trigger in triggers:
        try:
            transport.deliver(trigger)
        except DeliveryError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)
    return outcomes
