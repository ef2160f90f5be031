"""The records phasegate stores and passes around: plain frozen dataclasses."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from phasegate.clock import utc_iso

# A fixed namespace so trigger ids are the same on every machine and every release.
TRIGGER_NAMESPACE = uuid.UUID("6b0f1c9e-3f55-4d8f-9a53-2c1f3f0b7a11")


class Status(StrEnum):
    """How a processor's part of a run ended."""

    SUCCESS = "success"
    FAILED = "failed"


class TriggerReason(StrEnum):
    """Why a phase was handed on, or, for a start signal, why it was started.

    ``ready`` starts a fan-in phase that no trigger could name ready (see
    :mod:`phasegate.attempts`).
    """

    COMPLETE = "complete"
    TIMEOUT = "timeout"
    MANUAL = "manual"
    RERUN = "rerun"
    BACKFILL = "backfill"
    READY = "ready"

    @property
    def starts_phase(self) -> bool:
        """A start signal: it starts its own phase rather than handing on a finished one."""
        return self in _START_REASONS


_START_REASONS = frozenset({TriggerReason.RERUN, TriggerReason.BACKFILL, TriggerReason.READY})


class PhaseState(StrEnum):
    """Where one phase of one run stands."""

    NOT_STARTED = "not_started"
    WAITING = "waiting"
    COMPLETE = "complete"
    TRIGGERED = "triggered"
    TIMED_OUT = "timed_out"


def frozen_metadata(metadata: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy of ``metadata`` so a frozen record cannot be changed through it."""
    return MappingProxyType(dict(metadata or {}))


def trigger_id_for(pipeline: str, phase: str, run_key: str, attempt: int = 1) -> str:
    """The deterministic id of the trigger of ``phase`` for ``run_key`` in ``pipeline``.

    Attempt 1 keeps the id earlier releases gave, so stored triggers keep their ids.
    """
    name = f"{pipeline}\x1f{phase}\x1f{run_key}"
    if attempt != 1:
        name += f"\x1f{attempt}"
    return str(uuid.uuid5(TRIGGER_NAMESPACE, name))


def start_signal_id_for(pipeline: str, phase: str, run_key: str, attempt: int) -> str:
    """The deterministic id of the signal that starts attempt ``attempt`` of ``phase``.

    One id per phase-run, whatever started it (a rerun or a backfill), and never the id
    of a trigger that hands a finished phase on: a phase-run is started at most once.
    """
    name = f"{pipeline}\x1f{phase}\x1f{run_key}\x1f{attempt}\x1fstart"
    return str(uuid.uuid5(TRIGGER_NAMESPACE, name))


def rerun_signal_id_for(pipeline: str, run_key: str, sequence: int) -> str:
    """The deterministic id of the ``sequence``-th rerun of ``run_key`` (1 for the first).

    Reruns of one run are numbered, not named by phase: two reruns asked at the same
    moment (of any phases) compete for the same number, exactly one wins it, and the
    other is numbered after it, so the attempts a rerun opens never depend on timing.
    """
    name = f"{pipeline}\x1f{run_key}\x1f{sequence}\x1frerun"
    return str(uuid.uuid5(TRIGGER_NAMESPACE, name))


class PhaseRun(NamedTuple):
    """One attempt of one phase of one run: the unit that is triggered exactly once.

    A named tuple, not a dataclass: it keys every batch's answers and decisions, and a
    tuple hashes and compares in C."""

    phase: str
    run_key: str
    attempt: int = 1


class Answered(frozenset[str]):
    """A store's answer for one phase-run after a write: the processors that have
    succeeded in it (it is that frozenset), with what else the write's own read saw.

    ``failed`` are the processors whose report stands as failed and ``first_at`` the time
    of the phase-run's earliest report. A store that answers a plain frozenset leaves
    them unknown; the claim then reads the phase-run back (see ``Claiming._decide``).
    """

    __slots__ = ("failed", "first_at")

    failed: frozenset[str]
    first_at: datetime | None

    def __new__(
        cls,
        succeeded: Iterable[str] = (),
        failed: Iterable[str] = (),
        first_at: datetime | None = None,
    ) -> Answered:
        answer = super().__new__(cls, succeeded)
        answer.failed = frozenset(failed)
        answer.first_at = first_at
        return answer

    def __reduce__(self) -> Any:
        return (Answered, (frozenset(self), self.failed, self.first_at))


def answered(run: PhaseRun, completions: Iterable[Completion]) -> Answered:
    """The answer for ``run`` from the standing completions of a store (any run's)."""
    mine = [c for c in completions if c.phase_run == run]
    succeeded = {c.processor for c in mine if c.status is Status.SUCCESS}
    return Answered(
        succeeded,
        {c.processor for c in mine} - succeeded,
        min((c.occurred_at for c in mine), default=None),
    )


@dataclass(frozen=True, slots=True)
class Completion:
    """One processor's report that its part of a run has finished.

    Its identity is ``(phase, run_key, processor)``; ``success`` is sticky.
    """

    phase: str
    run_key: str
    processor: str
    status: Status
    occurred_at: datetime
    correlation_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: frozen_metadata(None))
    attempt: int = 1
    # ``metadata`` as validated JSON text, when the caller already has it: serialised once.
    metadata_encoded: str | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str, str, int]:
        """The identity of this completion: ``(phase, run_key, processor, attempt)``."""
        return (self.phase, self.run_key, self.processor, self.attempt)

    @property
    def phase_run(self) -> PhaseRun:
        """The phase-run this report counts for."""
        return PhaseRun(self.phase, self.run_key, self.attempt)

    def metadata_json(self) -> str:
        """``metadata`` as compact, key-sorted JSON (serialised once per report)."""
        if self.metadata_encoded is not None:
            return self.metadata_encoded
        return json.dumps(dict(self.metadata), sort_keys=True, separators=(",", ":"))


def prefer(current: Completion | None, incoming: Completion) -> Completion:
    """Which of two reports of the same completion stands: success wins, else the latest."""
    if current is None:
        return incoming
    if current.status is Status.SUCCESS:
        if incoming.status is Status.SUCCESS and incoming.occurred_at < current.occurred_at:
            return incoming
        return current
    if incoming.status is Status.SUCCESS or incoming.occurred_at >= current.occurred_at:
        return incoming
    return current


def message_json(message: Mapping[str, Any]) -> str:
    """``message`` as compact JSON with non-ASCII characters escaped (``\\uXXXX``), byte
    for byte what ``json.dumps(message, separators=(",", ":"))`` writes: by orjson when
    the text is printable ASCII (the usual case, several times faster), else by ``json``
    (orjson writes other characters, DEL among them, unescaped)."""
    text = orjson.dumps(message)
    if text.isascii() and b"\x7f" not in text:
        return text.decode()
    return json.dumps(message, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Trigger:
    """The decision that ``phase`` is done for ``run_key``, handed to its next phases.

    ``next_phases`` are every phase downstream of ``phase``; ``ready_phases`` those of
    them whose every upstream phase has now triggered for the run, the ones a runner
    starts. ``next_phase`` is the first of ``next_phases`` (kept for receivers written
    when a phase had one next). Given only ``next_phase``, ``next_phases`` is that one
    phase; ``ready_phases`` left ``None`` means all of ``next_phases`` (a straight line).

    A *start signal* (reason ``rerun``, ``backfill`` or ``ready``) starts ``phase`` itself:
    ``next_phases`` and ``ready_phases`` are ``(phase,)`` and ``attempt`` is the attempt
    it opens.
    """

    trigger_id: str
    pipeline: str
    phase: str
    next_phase: str | None
    run_key: str
    reason: TriggerReason
    triggered_at: datetime
    correlation_id: str | None = None
    processors: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    attempt: int = 1
    next_phases: tuple[str, ...] = ()
    ready_phases: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.next_phases and self.next_phase is not None:
            object.__setattr__(self, "next_phases", (self.next_phase,))
        elif self.next_phases and self.next_phase is None:
            object.__setattr__(self, "next_phase", self.next_phases[0])
        if self.ready_phases is None:
            object.__setattr__(self, "ready_phases", self.next_phases)

    @classmethod
    def start_signal(
        cls,
        pipeline: str,
        phase: str,
        run_key: str,
        attempt: int,
        reason: TriggerReason,
        triggered_at: datetime,
        correlation_id: str | None = None,
        trigger_id: str | None = None,
    ) -> Trigger:
        """The message that starts attempt ``attempt`` of ``phase`` for ``run_key``.

        Its id is :func:`start_signal_id_for` unless ``trigger_id`` is given (a rerun
        passes :func:`rerun_signal_id_for`).
        """
        if not reason.starts_phase:
            raise ValueError(
                f"a start signal has reason rerun, backfill or ready, not {reason.value}"
            )
        return cls(
            trigger_id=trigger_id or start_signal_id_for(pipeline, phase, run_key, attempt),
            pipeline=pipeline,
            phase=phase,
            next_phase=phase,
            run_key=run_key,
            reason=reason,
            triggered_at=triggered_at,
            correlation_id=correlation_id,
            attempt=attempt,
            next_phases=(phase,),
            ready_phases=(phase,),
        )

    @property
    def is_start_signal(self) -> bool:
        """Whether this message starts ``phase`` (rerun, backfill) rather than hands it on."""
        return self.reason.starts_phase

    @property
    def phase_run(self) -> PhaseRun:
        """The phase-run this trigger completes (or, for a start signal, opens)."""
        return PhaseRun(self.phase, self.run_key, self.attempt)

    @property
    def ready(self) -> tuple[str, ...]:
        """``ready_phases`` as a tuple (never ``None`` once built)."""
        return self.ready_phases or ()

    def to_message(self) -> dict[str, Any]:
        """The trigger message, exactly the documented keys."""
        return {
            "trigger_id": self.trigger_id,
            "pipeline": self.pipeline,
            "phase": self.phase,
            "next_phase": self.next_phase,
            "next_phases": list(self.next_phases),
            "ready_phases": list(self.ready),
            "run_key": self.run_key,
            "reason": self.reason.value,
            "correlation_id": self.correlation_id,
            "processors": list(self.processors),
            "missing": list(self.missing),
            "triggered_at": utc_iso(self.triggered_at),
            "attempt": self.attempt,
        }

    def to_json(self) -> str:
        """The trigger message as compact JSON, non-ASCII characters escaped."""
        return message_json(self.to_message())

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Trigger:
        """Rebuild a trigger from its message (as stored in the outbox).

        Messages stored before fan-out lack ``next_phases`` and ``ready_phases``; they
        come back as a straight line: both are ``[next_phase]`` (or empty).
        """
        ready = message.get("ready_phases")
        return cls(
            trigger_id=str(message["trigger_id"]),
            pipeline=str(message["pipeline"]),
            phase=str(message["phase"]),
            next_phase=message.get("next_phase"),
            run_key=str(message["run_key"]),
            reason=TriggerReason(message["reason"]),
            triggered_at=datetime.fromisoformat(str(message["triggered_at"])),
            correlation_id=message.get("correlation_id"),
            processors=tuple(message.get("processors", ())),
            missing=tuple(message.get("missing", ())),
            attempt=int(message.get("attempt", 1)),
            next_phases=tuple(message.get("next_phases", ())),
            ready_phases=None if ready is None else tuple(ready),
        )


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A claimed trigger and where its delivery stands."""

    trigger: Trigger
    claimed_at: datetime
    delivered_at: datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    # Set only on what ``lease_triggers`` returns: the other owner whose lease on this
    # trigger had expired undelivered (a replica that died or hung mid-delivery).
    expired_lease_owner: str | None = None

    @property
    def delivered(self) -> bool:
        """Whether a transport has accepted this trigger."""
        return self.delivered_at is not None

    def leased_at(self, now: datetime) -> bool:
        """Whether a dispatcher holds an unexpired delivery lease on this trigger at ``now``."""
        return self.lease_expires_at is not None and self.lease_expires_at > now

    def leased_to(self, owner: str, until: datetime) -> OutboxEntry:
        """This due entry leased to ``owner``, naming the other owner whose lease expired."""
        expired = self.lease_owner if self.lease_owner not in (None, owner) else None
        return replace(self, lease_owner=owner, lease_expires_at=until, expired_lease_owner=expired)


@dataclass(frozen=True, slots=True)
class PhaseExecution:
    """How one phase of one run went: the history behind "how long does phase 3 take?"."""

    phase: str
    run_key: str
    started_at: datetime
    triggered_at: datetime
    processors: tuple[str, ...]
    reason: TriggerReason
    trigger_id: str
    attempt: int = 1

    @property
    def duration_seconds(self) -> float:
        """Seconds from the phase's start to its trigger."""
        return (self.triggered_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class TimeoutReport:
    """The one-time record that a phase missed its timeout."""

    phase: str
    run_key: str
    started_at: datetime
    reported_at: datetime
    missing: tuple[str, ...]
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class RecordSet:
    """Everything a store holds for a range of run keys, for reconciliation and replay."""

    completions: tuple[Completion, ...] = ()
    history: tuple[Completion, ...] = ()
    triggers: tuple[OutboxEntry, ...] = ()
    executions: tuple[PhaseExecution, ...] = ()
    timeouts: tuple[TimeoutReport, ...] = ()

    @property
    def run_keys(self) -> frozenset[str]:
        """The run keys this set touches."""
        keys = {c.run_key for c in self.completions}
        keys.update(c.run_key for c in self.history)
        keys.update(t.trigger.run_key for t in self.triggers)
        keys.update(e.run_key for e in self.executions)
        keys.update(t.run_key for t in self.timeouts)
        return frozenset(keys)

    def __len__(self) -> int:
        return (
            len(self.completions)
            + len(self.history)
            + len(self.triggers)
            + len(self.executions)
            + len(self.timeouts)
        )
