"""The alert model, the sink protocol, and how events become alerts."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from phasegate.errors import PhasegateError
from phasegate.events import Event, EventKind, Severity

SEVERITY_RANK = {
    Severity.INFO: 0,
    Severity.RESOLVED: 1,
    Severity.WARNING: 1,
    Severity.CRITICAL: 2,
}

_HINTS = {
    EventKind.BOTH_STORES_FAILED: (
        "Check both stores: while neither answers, reports are not acknowledged and no "
        "phase is triggered."
    ),
    EventKind.STORE_DEGRADED: (
        "Check this store; the other one takes every write and it is caught up when it answers."
    ),
    EventKind.BREAKER_OPENED: "Check this store; writes go to the other one meanwhile.",
    EventKind.PHASE_TIMED_OUT: "Check the logs of the missing processors.",
    EventKind.DELIVERY_FAILED: "Check the trigger receiver; the trigger waits in the outbox.",
    EventKind.TRIGGER_NOT_MARKED: (
        "Check both stores; the trigger goes out again with the same id: the receiver "
        "must de-duplicate."
    ),
    EventKind.DELIVERY_FAILURE_NOT_RECORDED: (
        "Check both stores and the receiver; the trigger is retried at every pass meanwhile."
    ),
    EventKind.LEASE_EXPIRED: (
        "Check why that replica stopped (its logs, OOM kills, restarts); the trigger was "
        "delivered again with the same id."
    ),
    EventKind.PROCESSOR_FAILED: "Check the processor's logs; rerun it to report success.",
    EventKind.CLAIM_DEFERRED: "Run `phasegate check-timeouts` once a store is back.",
    EventKind.UNEXPECTED_ERROR: (
        "A bug or an unmapped driver error: see the traceback; the call raised it to its caller."
    ),
    EventKind.DOUBLE_CLAIM: "A phase may have triggered twice: check the receiver de-duplicates.",
    EventKind.RECONCILE_DIVERGENCE: (
        "See the records with `phasegate reconcile --format json`; `--repair` copies them."
    ),
    EventKind.RECONCILE_FAILED: "Check both stores are reachable; the next pass tries again.",
    EventKind.MESSAGE_DEAD_LETTERED: (
        "Fix the publisher and publish it again: it was acknowledged, not recorded."
    ),
}


class AlertDeliveryError(PhasegateError):
    """A sink could not deliver an alert."""


@dataclass(frozen=True, slots=True)
class Alert:
    """Something a person must hear about; ``fingerprint`` says which alerts are "the same"."""

    severity: Severity
    component: str
    title: str
    message: str
    fingerprint: str
    created_at: datetime
    run_key: str | None = None
    phase: str | None = None
    error_type: str | None = None
    stack_trace: str | None = None
    correlation_id: str | None = None
    hint: str | None = None
    count: int = 1

    def with_count(self, count: int) -> Alert:
        """The same alert standing for ``count`` occurrences."""
        return replace(self, count=count)


class AlertSink(Protocol):
    """Where alerts go. ``send`` may block and raise; the alerter calls it off the hot path."""

    name: str
    min_severity: Severity

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` or raise AlertDeliveryError."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _constant(text: str) -> Callable[[Event], str]:
    return lambda _event: text


def _by_run(prefix: str) -> Callable[[Event], str]:
    return lambda event: f"{prefix}:{event.phase}:{event.run_key}"


# Which condition an event is about, by kind; an unlisted kind folds per phase-run.
_FINGERPRINTS: dict[EventKind, Callable[[Event], str]] = {
    EventKind.BOTH_STORES_FAILED: _constant("stores:both-failed"),
    EventKind.STORES_RECOVERED: _constant("stores:both-failed"),
    EventKind.BREAKER_OPENED: lambda e: f"breaker:{e.component}",
    EventKind.BREAKER_CLOSED: lambda e: f"breaker:{e.component}",
    EventKind.STORE_DEGRADED: lambda e: f"degraded:{e.component}",
    EventKind.TRIGGER_NOT_MARKED: _constant("outbox:not-marked"),
    EventKind.DELIVERY_FAILURE_NOT_RECORDED: _constant("outbox:failure-not-recorded"),
    EventKind.PHASE_TIMED_OUT: _by_run("timeout"),
    # One alert per replica that left triggers behind, however many it held.
    EventKind.LEASE_EXPIRED: lambda e: f"lease:{e.details.get('lease_owner')}",
    # One condition, however many phase-runs wait: "claims wait for the primary".
    EventKind.CLAIM_DEFERRED: _constant("claims:deferred"),
    EventKind.DELIVERY_FAILED: lambda e: f"delivery:{e.details.get('trigger_id')}",
    EventKind.TRIGGER_DELIVERED: lambda e: f"delivery:{e.details.get('trigger_id')}",
    EventKind.PROCESSOR_FAILED: lambda e: (
        f"processor:{e.phase}:{e.details.get('processor')}:{e.run_key}"
    ),
    EventKind.UNEXPECTED_ERROR: lambda e: f"unexpected:{e.component}:{type(e.error).__name__}",
    # by severity: a divergence left after repair must not fold into one repaired
    EventKind.RECONCILE_DIVERGENCE: lambda e: f"{e.kind.value}:{e.severity.value}",
    EventKind.RECONCILE_FAILED: lambda e: f"{e.kind.value}:{e.severity.value}",
}


def fingerprint(event: Event) -> str:
    """Which condition ``event`` is about: equal fingerprints are folded together."""
    rule = _FINGERPRINTS.get(event.kind)
    if rule is None:
        return f"{event.kind.value}:{event.phase}:{event.run_key}"
    return rule(event)


def resolved_fingerprints(event: Event) -> list[str]:
    """The conditions that ``event`` shows to have cleared.

    A ``resolved`` event clears its own condition (``store_degraded``, ...).
    """
    cleared: list[str] = []
    match event.kind:
        case EventKind.STORES_RECOVERED | EventKind.BREAKER_CLOSED:
            cleared.append(fingerprint(event))
        case EventKind.TRIGGER_DELIVERED:
            cleared.append(fingerprint(event))
            if event.details.get("marked", True):
                cleared.append("outbox:not-marked")
        case EventKind.DELIVERY_FAILED if event.details.get("recorded", True):
            cleared.append("outbox:failure-not-recorded")
        case EventKind.RECONCILED:
            cleared += [
                f"{EventKind.RECONCILE_FAILED.value}:{Severity.WARNING.value}",
                f"{EventKind.RECONCILE_DIVERGENCE.value}:{Severity.CRITICAL.value}",
            ]
        case EventKind.TRIGGER_CLAIMED:
            cleared.append(f"timeout:{event.phase}:{event.run_key}")
        case _ if event.severity is Severity.RESOLVED:
            cleared.append(fingerprint(event))
    return cleared


def alert_from_event(event: Event, now: datetime) -> Alert:
    """The alert a person should see for ``event``."""
    error = event.error
    stack = None
    if error is not None and error.__traceback__ is not None:
        stack = "".join(traceback.format_exception(error)).rstrip()
    error_type = type(error).__name__ if error is not None else event.kind.value
    return Alert(
        severity=event.severity,
        component=event.component,
        title=event.kind.value.replace("_", " "),
        message=event.message,
        fingerprint=fingerprint(event),
        created_at=now,
        run_key=event.run_key,
        phase=event.phase,
        error_type=error_type,
        stack_trace=stack,
        correlation_id=event.correlation_id,
        hint=_HINTS.get(event.kind),
    )
