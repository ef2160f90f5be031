"""Where one phase of one run stands, at its current attempt: :class:`PhaseStatus`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from phasegate.attempts import RunAttempts
from phasegate.clock import utc_iso
from phasegate.config import Phase
from phasegate.model import Answered, Completion, OutboxEntry, PhaseState, Status


@dataclass(frozen=True, slots=True)
class PhaseStatus:
    """Where one phase of one run stands, at its current attempt.

    ``expected`` are the required processors and ``missing`` those of them that have
    not succeeded; ``optional`` and ``optional_missing`` the same for the optional
    processors. ``succeeded`` and ``failed`` cover both kinds.
    """

    phase: str
    run_key: str
    state: PhaseState
    expected: tuple[str, ...]
    succeeded: tuple[str, ...]
    failed: tuple[str, ...]
    missing: tuple[str, ...]
    started_at: datetime | None
    deadline: datetime | None
    trigger: OutboxEntry | None
    optional: tuple[str, ...] = ()
    optional_missing: tuple[str, ...] = ()
    attempt: int = 1
    start_signal: OutboxEntry | None = None

    @property
    def complete(self) -> bool:
        """Every required processor has succeeded."""
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as ``phasegate status --format json`` and the HTTP API show it."""
        return {
            "phase": self.phase,
            "state": self.state.value,
            "attempt": self.attempt,
            "expected": list(self.expected),
            "optional": list(self.optional),
            "succeeded": list(self.succeeded),
            "failed": list(self.failed),
            "missing": list(self.missing),
            "optional_missing": list(self.optional_missing),
            "started_at": utc_iso(self.started_at) if self.started_at else None,
            "deadline": utc_iso(self.deadline) if self.deadline else None,
            "trigger": _entry_dict(self.trigger),
            "start_signal": _entry_dict(self.start_signal),
        }


def _entry_dict(entry: OutboxEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    trigger = entry.trigger
    return {
        "trigger_id": trigger.trigger_id,
        "reason": trigger.reason.value,
        "attempt": trigger.attempt,
        "next_phase": trigger.next_phase,
        "next_phases": list(trigger.next_phases),
        "ready_phases": list(trigger.ready_phases or ()),
        "claimed_at": utc_iso(entry.claimed_at),
        "delivered_at": utc_iso(entry.delivered_at) if entry.delivered_at else None,
        "attempts": entry.attempts,
        "last_error": entry.last_error,
    }


def evaluate_phase(
    definition: Phase,
    run_key: str,
    completions: Sequence[Completion],
    attempts: RunAttempts,
    now: datetime,
) -> PhaseStatus:
    """The status of ``definition`` for ``run_key`` from the run's completions and triggers.

    Only reports of the phase's current attempt count; an earlier attempt's stay in
    history.
    """
    phase = definition.name
    attempt = attempts.attempt(phase)
    mine = [c for c in completions if c.phase == phase and c.attempt == attempt]
    succeeded = {c.processor for c in mine if c.status is Status.SUCCESS}
    return phase_status(
        definition,
        run_key,
        Answered(
            succeeded,
            {c.processor for c in mine} - succeeded,
            min((c.occurred_at for c in mine), default=None),
        ),
        attempts,
        now,
    )


def phase_status(
    definition: Phase,
    run_key: str,
    reports: Answered,
    attempts: RunAttempts,
    now: datetime,
) -> PhaseStatus:
    """The status of ``definition`` for ``run_key`` from what stands of its current
    attempt's reports (a store's answer after a write, or the reports read back)."""
    phase = definition.name
    succeeded = tuple(p for p in definition.all_processors if p in reports)
    failed = tuple(p for p in definition.all_processors if p in reports.failed)
    missing = tuple(p for p in definition.processors if p not in reports)
    optional_missing = tuple(p for p in definition.optional if p not in reports)
    started_at = attempts.started_at(phase) or reports.first_at
    deadline = started_at + definition.timeout if started_at and definition.timeout else None
    trigger = attempts.trigger(phase)
    if trigger is not None:
        state = PhaseState.TRIGGERED
    elif not missing:
        state = PhaseState.COMPLETE
    elif deadline is not None and now > deadline:
        state = PhaseState.TIMED_OUT
    elif started_at is not None:
        state = PhaseState.WAITING
    else:
        state = PhaseState.NOT_STARTED
    return PhaseStatus(
        phase=phase,
        run_key=run_key,
        state=state,
        expected=definition.processors,
        succeeded=succeeded,
        failed=failed,
        missing=missing,
        started_at=started_at,
        deadline=deadline,
        trigger=trigger,
        optional=definition.optional,
        optional_missing=optional_missing,
        attempt=attempts.attempt(phase),
        start_signal=attempts.start_signal(phase),
    )
