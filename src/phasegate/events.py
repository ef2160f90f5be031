"""What happened, for whoever listens: alerts, metrics and the demo subscribe here.

Components emit events; a listener that fails is logged and never breaks the emitter.
An exception that a warning or critical event carried is marked as announced, so that
the same failure is never announced twice as an ``unexpected_error`` by an outer layer
(a library call's guard, then the service's error handler).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class Severity(StrEnum):
    """How urgent an event is; ``resolved`` says a condition has cleared."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"
    RESOLVED = "resolved"


class EventKind(StrEnum):
    """Every kind of event phasegate emits."""

    BOTH_STORES_FAILED = "both_stores_failed"
    STORES_RECOVERED = "stores_recovered"
    STORE_DEGRADED = "store_degraded"
    BREAKER_OPENED = "breaker_opened"
    BREAKER_CLOSED = "breaker_closed"
    PROCESSOR_FAILED = "processor_failed"
    TRIGGER_CLAIMED = "trigger_claimed"
    CLAIM_DEFERRED = "claim_deferred"
    TRIGGER_DELIVERED = "trigger_delivered"
    DELIVERY_FAILED = "delivery_failed"
    TRIGGER_NOT_MARKED = "trigger_not_marked"
    DELIVERY_FAILURE_NOT_RECORDED = "delivery_failure_not_recorded"
    LEASE_EXPIRED = "lease_expired"
    PHASE_TIMED_OUT = "phase_timed_out"
    UNEXPECTED_ERROR = "unexpected_error"
    DOUBLE_CLAIM = "double_claim"
    RECONCILE_DIVERGENCE = "reconcile_divergence"
    RECONCILE_FAILED = "reconcile_failed"
    RECONCILED = "reconciled"
    MESSAGE_DEAD_LETTERED = "message_dead_lettered"


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened, with enough context to alert a person about it."""

    kind: EventKind
    severity: Severity
    component: str
    message: str
    run_key: str | None = None
    phase: str | None = None
    correlation_id: str | None = None
    error: BaseException | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


EventListener = Callable[[Event], None]

_ANNOUNCED = "__phasegate_announced__"
_ALERTING = frozenset({Severity.WARNING, Severity.CRITICAL})


def was_announced(error: BaseException) -> bool:
    """Whether a warning or critical event already carried ``error``."""
    return bool(getattr(error, _ANNOUNCED, False))


def _mark_announced(error: BaseException) -> None:
    # An exception type that refuses attributes is simply announced again.
    with contextlib.suppress(AttributeError):
        setattr(error, _ANNOUNCED, True)


_LEVELS = {
    Severity.CRITICAL: logging.CRITICAL,
    Severity.WARNING: logging.WARNING,
    Severity.INFO: logging.INFO,
    Severity.RESOLVED: logging.INFO,
}


class EventBus:
    """Fan-out of events to listeners; every event is also logged at its severity."""

    def __init__(self) -> None:
        self._listeners: list[EventListener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: EventListener) -> None:
        """Call ``listener(event)`` for every event from now on."""
        with self._lock:
            self._listeners.append(listener)

    def emit(self, event: Event, *, already_logged: bool = False) -> None:
        """Log ``event`` at its severity (unless the emitter did) and hand it to every listener.

        An ``unexpected_error`` about an exception that an earlier event already carried
        is dropped: one failure, one alert.
        """
        error = event.error
        if error is not None and event.severity in _ALERTING:
            if event.kind is EventKind.UNEXPECTED_ERROR and was_announced(error):
                log.debug("%s already announced; not again as unexpected", type(error).__name__)
                return
            _mark_announced(error)
        if not already_logged:
            self._log(event)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, event.kind.value)

    @staticmethod
    def _log(event: Event) -> None:
        log.log(
            _LEVELS[event.severity],
            "%s: %s",
            event.component,
            event.message,
            extra={
                "event": event.kind.value,
                "run_key": event.run_key,
                "phase": event.phase,
                "correlation_id": event.correlation_id,
            },
        )
