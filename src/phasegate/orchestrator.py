"""Completion in, next phase out: validate, dual-write, evaluate, claim once, outbox."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from phasegate import reruns
from phasegate.attempts import RunAttempts
from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.config import Phase, Pipeline
from phasegate.errors import BothStoresFailed, ValidationError
from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseExecution,
    PhaseRun,
    PhaseState,
    Status,
    Trigger,
    TriggerReason,
    frozen_metadata,
    trigger_id_for,
)
from phasegate.reports import parse_report
from phasegate.status import PhaseStatus, evaluate_phase
from phasegate.tracker import BatchWriteResult, ClaimOutcome, CompletionTracker
from phasegate.unexpected import alerts_unexpected

# PhaseStatus lives in status.py; importing it from here keeps working.
__all__ = ["BatchItem", "CompletionResult", "Orchestrator", "PhaseStatus", "TriggerResult"]

log = logging.getLogger(__name__)

MAX_METADATA_BYTES = 16 * 1024
MAX_CORRELATION_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class CompletionResult:
    """What ``handle_completion`` did with one report."""

    completion: Completion
    primary_ok: bool
    backup_ok: bool
    phase_complete: bool
    trigger_id: str | None
    claimed: bool
    deferred: bool = False

    @property
    def recorded(self) -> bool:
        """The completion is durable in at least one store (always true when returned)."""
        return self.primary_ok or self.backup_ok

    def to_dict(self) -> dict[str, Any]:
        """The answer the CLI (``--format json``) and ``POST /v1/completions`` give."""
        return {
            "recorded": self.recorded,
            "primary_ok": self.primary_ok,
            "backup_ok": self.backup_ok,
            "phase_complete": self.phase_complete,
            "trigger_id": self.trigger_id,
            "claimed": self.claimed,
            "deferred": self.deferred,
            "correlation_id": self.completion.correlation_id,
        }


@dataclass(frozen=True, slots=True)
class BatchItem:
    """The answer for one report of a batch: its result, or why it was rejected."""

    index: int
    result: CompletionResult | None = None
    error: ValidationError | None = None

    @property
    def ok(self) -> bool:
        """The report was recorded."""
        return self.result is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as ``POST /v1/completions:batch`` answers each item."""
        if self.result is not None:
            return {"index": self.index, "ok": True, **self.result.to_dict()}
        assert self.error is not None
        return {
            "index": self.index,
            "ok": False,
            "error": {
                "code": self.error.code,
                "field": self.error.field,
                "message": self.error.message,
            },
        }


@dataclass(frozen=True, slots=True)
class _Claimed:
    """What became of one complete phase-run of a batch."""

    trigger_id: str | None
    claimed: bool
    deferred: bool


@dataclass(frozen=True, slots=True)
class TriggerResult:
    """The outcome of an attempt to trigger a phase."""

    trigger: Trigger
    claimed: bool
    deferred: bool


def _component(phase: Phase) -> str:
    return f"{phase.name}_to_{'+'.join(phase.next_phases)}" if phase.next_phases else phase.name


class Orchestrator:
    """Turns completions into exactly-once phase triggers for one pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        tracker: CompletionTracker,
        *,
        events: EventBus | None = None,
        clock: Clock | None = None,
        on_claimed: Callable[[Trigger], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.tracker = tracker
        self.events = events or EventBus()
        self.clock = clock or tracker.clock or SYSTEM_CLOCK
        self._on_claimed = on_claimed
        self._stores_down = False
        self._state_lock = threading.Lock()
        self._deferred: set[str] = set()
        self._book = reruns.AttemptBook()

    # -- validation ----------------------------------------------------------------------

    def validate(
        self,
        phase: object,
        run_key: object,
        processor: object,
        *,
        status: object = Status.SUCCESS.value,
        correlation_id: object = None,
        metadata: object = None,
        occurred_at: datetime | None = None,
    ) -> Completion:
        """Check a report and build its :class:`Completion`; a ValidationError names the field."""
        phase_name = _string("phase", phase)
        definition = self.pipeline.phase(phase_name)
        run = self.pipeline.validate_run_key(_string("run_key", run_key))
        processor_name = _string("processor", processor)
        if processor_name not in definition.all_processors:
            raise ValidationError(
                "processor",
                f"{processor_name!r} is not expected in phase {phase_name!r}; "
                f"expected one of: {', '.join(definition.all_processors)}",
                code="unknown_processor",
            )
        status_text = _string("status", status)
        try:
            status_value = Status(status_text)
        except ValueError:
            raise ValidationError(
                "status", f"{status_text!r}; expected one of: success, failed"
            ) from None
        if correlation_id is None or correlation_id == "":
            correlation = uuid.uuid4().hex
        else:
            correlation = _string("correlation_id", correlation_id)
            if len(correlation) > MAX_CORRELATION_ID_LENGTH:
                raise ValidationError(
                    "correlation_id", f"longer than {MAX_CORRELATION_ID_LENGTH} characters"
                )
        decoded, encoded = _metadata(metadata)
        return Completion(
            phase=phase_name,
            run_key=run,
            processor=processor_name,
            status=status_value,
            occurred_at=occurred_at or self.clock.now(),
            correlation_id=correlation,
            metadata=frozen_metadata(decoded),
            metadata_encoded=encoded,
        )

    # -- the main path -------------------------------------------------------------------

    @alerts_unexpected("orchestrator")
    def handle_completion(
        self,
        phase: object,
        run_key: object,
        processor: object,
        *,
        status: object = Status.SUCCESS.value,
        correlation_id: object = None,
        metadata: object = None,
        occurred_at: datetime | None = None,
    ) -> CompletionResult:
        """Validate and record one report; trigger the next phase if this completed its phase.

        Raises ValidationError for bad input and BothStoresFailed when nothing could be
        recorded (the report is then not acknowledged).
        """
        completion = self.validate(
            phase,
            run_key,
            processor,
            status=status,
            correlation_id=correlation_id,
            metadata=metadata,
            occurred_at=occurred_at,
        )
        return self.record([completion])[0]

    def validate_reports(
        self, reports: Iterable[object]
    ) -> tuple[list[BatchItem | None], list[tuple[int, Completion]]]:
        """Validate each report on its own: a slot per report (an error item, or ``None``
        for a valid one) and the valid completions with their indexes."""
        items: list[BatchItem | None] = []
        valid: list[tuple[int, Completion]] = []
        for index, report in enumerate(reports):
            try:
                if not isinstance(report, Mapping):
                    raise ValidationError(
                        "item",
                        f"expected a JSON object, got {_json_type(report)}",
                        code="wrong_type",
                    )
                completion = self.validate_report(report)
            except ValidationError as exc:
                items.append(BatchItem(index, error=exc))
                continue
            items.append(None)
            valid.append((index, completion))
        return items, valid

    def validate_report(
        self, body: object, *, default_correlation_id: str | None = None
    ) -> Completion:
        """Check a report that arrived as a decoded JSON object (its shape, then every
        value) and build its :class:`Completion`."""
        report = parse_report(body, default_correlation_id=default_correlation_id)
        return self.validate(
            report.phase,
            report.run_key,
            report.processor,
            status=report.status,
            correlation_id=report.correlation_id,
            metadata=report.metadata,
        )

    @staticmethod
    def _answer(
        items: list[BatchItem | None],
        valid: list[tuple[int, Completion]],
        results: list[CompletionResult],
    ) -> list[BatchItem]:
        for (index, _), result in zip(valid, results, strict=True):
            items[index] = BatchItem(index, result=result)
        return [item for item in items if item is not None]

    @alerts_unexpected("orchestrator")
    async def arecord_completions(self, reports: Iterable[object]) -> list[BatchItem]:
        """:meth:`record_completions` for an event loop (the HTTP service's path)."""
        items, valid = self.validate_reports(reports)
        results = await self.arecord([c for _, c in valid]) if valid else []
        return self._answer(items, valid, results)

    @alerts_unexpected("orchestrator")
    async def arecord(self, completions: Sequence[Completion]) -> list[CompletionResult]:
        """:meth:`record` for an event loop: the batch write is awaited without a thread;
        the claims of phase-runs it completed (a read and a compare-and-set) run in one."""
        completions = self._book.stamp(completions)
        try:
            write = await self.tracker.arecord_completions(completions)
        except BothStoresFailed as exc:
            self._stores_failed(completions, exc)
            raise
        self._stores_ok(completions)
        if _superseded(write):
            completions, write = await asyncio.to_thread(self._restamp, completions, write)
        if not self._completed_by(write):
            return self._settle(completions, write)
        return await asyncio.to_thread(self._settle, completions, write)

    @alerts_unexpected("orchestrator")
    def record_completions(self, reports: Iterable[object]) -> list[BatchItem]:
        """Validate each report on its own, record the valid ones as one batch, and trigger
        what they complete.

        A bad report is answered with its index and the field that is wrong; the good
        ones are recorded all the same. Raises BothStoresFailed when the batch could not
        be recorded at all (then nothing in it is acknowledged).
        """
        items, valid = self.validate_reports(reports)
        results = self.record([c for _, c in valid]) if valid else []
        return self._answer(items, valid, results)

    @alerts_unexpected("orchestrator")
    def record(self, completions: Sequence[Completion]) -> list[CompletionResult]:
        """Record validated completions as one dual-written batch, then claim the triggers
        of every phase-run the batch completed; one result per completion, in order.

        Each report is stamped with the attempt it counts for (see :mod:`reruns`)."""
        completions = self._book.stamp(completions)
        write = self._write(completions)
        if _superseded(write):
            completions, write = self._restamp(completions, write)
        return self._settle(completions, write)

    def _write(self, completions: Sequence[Completion]) -> BatchWriteResult:
        try:
            write = self.tracker.record_completions(completions)
        except BothStoresFailed as exc:
            self._stores_failed(completions, exc)
            raise
        self._stores_ok(completions)
        return write

    def _restamp(
        self, completions: list[Completion], write: BatchWriteResult
    ) -> tuple[list[Completion], BatchWriteResult]:
        """A rerun superseded phase-runs of this batch: learn the runs' current attempts and
        record those reports again under them; the answer merges both writes."""
        stale = {run for run, names in write.successes().items() if reruns.SUPERSEDED in names}
        for run_key in sorted({run.run_key for run in stale}):
            self.attempts(run_key)
        restamped = self._book.stamp(completions)
        moved = [c for c, before in zip(restamped, completions, strict=True) if c != before]
        if not moved:
            return completions, write
        again = self._write(moved)

        def merged(first: Any, second: Any) -> dict[PhaseRun, frozenset[str]]:
            kept = {run: names for run, names in (first or {}).items() if run not in stale}
            return {**kept, **(second or {})}

        return restamped, BatchWriteResult(
            again.primary_ok,
            again.backup_ok,
            again.primary_error,
            again.backup_error,
            merged(write.primary_value, again.primary_value),
            merged(write.backup_value, again.backup_value),
        )

    def _completed_by(self, write: BatchWriteResult) -> set[PhaseRun]:
        successes = write.successes()
        return {
            run
            for run in successes
            if set(self.pipeline.phase(run.phase).processors) <= successes[run]
        }

    def _settle(
        self, completions: Sequence[Completion], write: BatchWriteResult
    ) -> list[CompletionResult]:
        """After a batch is durable: report failures, claim what it completed, answer."""
        successes = write.successes()
        for completion in completions:
            if completion.status is Status.FAILED:
                self._report_failure(completion, successes.get(completion.phase_run, frozenset()))
        complete = self._completed_by(write)
        # Triggers are read only when they matter: most reports do not complete a phase.
        claimed = {run: self._trigger_complete(run, completions) for run in sorted(complete)}
        results: list[CompletionResult] = []
        first_of: set[PhaseRun] = set()
        for completion in completions:
            run = completion.phase_run
            outcome = claimed.get(run)
            results.append(
                CompletionResult(
                    completion=completion,
                    primary_ok=write.primary_ok,
                    backup_ok=write.backup_ok,
                    phase_complete=run in complete,
                    trigger_id=outcome.trigger_id if outcome else None,
                    claimed=bool(outcome and outcome.claimed and run not in first_of),
                    deferred=bool(outcome and outcome.deferred),
                )
            )
            first_of.add(run)
        return results

    def _stores_failed(self, completions: Sequence[Completion], exc: BothStoresFailed) -> None:
        first = completions[0]
        self.events.emit(
            Event(
                EventKind.BOTH_STORES_FAILED,
                Severity.CRITICAL,
                _component(self.pipeline.phase(first.phase)),
                f"{len(completions)} completion(s) (first: {first.processor} for "
                f"{first.run_key}) were not recorded: both stores failed ({exc})",
                run_key=first.run_key,
                phase=first.phase,
                correlation_id=first.correlation_id,
                error=exc,
            ),
            already_logged=True,
        )
        with self._state_lock:
            self._stores_down = True

    def _stores_ok(self, completions: Sequence[Completion]) -> None:
        with self._state_lock:
            recovered, self._stores_down = self._stores_down, False
        if recovered:
            first = completions[0]
            self.events.emit(
                Event(
                    EventKind.STORES_RECOVERED,
                    Severity.RESOLVED,
                    _component(self.pipeline.phase(first.phase)),
                    "completions are recorded again",
                    run_key=first.run_key,
                    phase=first.phase,
                )
            )

    def _trigger_complete(self, run: PhaseRun, completions: Sequence[Completion]) -> _Claimed:
        status_now, attempts = self._phase_state(run.phase, run.run_key)
        if status_now.trigger is not None:
            return _Claimed(status_now.trigger.trigger.trigger_id, claimed=False, deferred=False)
        if status_now.attempt != run.attempt or status_now.state is not PhaseState.COMPLETE:
            # Superseded by a rerun between the write and this read: nothing to claim.
            return _Claimed(None, claimed=False, deferred=False)
        correlation = next((c.correlation_id for c in completions if c.phase_run == run), None)
        outcome = self._claim(
            self.pipeline.phase(run.phase),
            run.run_key,
            TriggerReason.COMPLETE,
            correlation,
            status_now,
            attempts,
        )
        return _Claimed(
            None if outcome.deferred else outcome.trigger.trigger_id,
            claimed=outcome.claimed,
            deferred=outcome.deferred,
        )

    def _report_failure(self, completion: Completion, succeeded: frozenset[str]) -> None:
        phase = self.pipeline.phase(completion.phase)
        if completion.processor in succeeded:
            log.info(
                "late failure of %s for %s ignored: it already succeeded",
                completion.processor,
                completion.run_key,
            )
            return
        self.events.emit(
            Event(
                EventKind.PROCESSOR_FAILED,
                Severity.WARNING,
                _component(phase),
                f"processor {completion.processor} reported failed for {completion.run_key}",
                run_key=completion.run_key,
                phase=completion.phase,
                correlation_id=completion.correlation_id,
                details={"processor": completion.processor, **dict(completion.metadata)},
            )
        )

    def _claim(
        self,
        phase: Phase,
        run_key: str,
        reason: TriggerReason,
        correlation_id: str | None,
        status: PhaseStatus,
        attempts: RunAttempts,
    ) -> TriggerResult:
        now = self.clock.now()
        trigger = Trigger(
            trigger_id=trigger_id_for(self.pipeline.name, phase.name, run_key, status.attempt),
            pipeline=self.pipeline.name,
            phase=phase.name,
            next_phase=phase.next,
            run_key=run_key,
            reason=reason,
            triggered_at=now,
            correlation_id=correlation_id,
            processors=status.succeeded,
            missing=status.missing if reason is not TriggerReason.COMPLETE else (),
            attempt=status.attempt,
            next_phases=phase.next_phases,
            ready_phases=attempts.ready_in_trigger_of(phase.name),
        )
        outcome: ClaimOutcome = self.tracker.claim_trigger(trigger)
        if outcome.deferred:
            self.events.emit(
                Event(
                    EventKind.CLAIM_DEFERRED,
                    Severity.WARNING,
                    _component(phase),
                    f"trigger of {phase.name} for {run_key} deferred: no store can decide it "
                    "safely now; the next sweep will",
                    run_key=run_key,
                    phase=phase.name,
                    correlation_id=correlation_id,
                ),
                already_logged=True,
            )
            with self._state_lock:
                self._deferred.add(run_key)
            return TriggerResult(trigger, claimed=False, deferred=True)
        if not outcome.won:
            self._check_held(trigger)
            return TriggerResult(trigger, claimed=False, deferred=False)
        execution = PhaseExecution(
            phase=phase.name,
            run_key=run_key,
            started_at=min(status.started_at or now, now),
            triggered_at=now,
            processors=status.succeeded,
            reason=reason,
            trigger_id=trigger.trigger_id,
            attempt=status.attempt,
        )
        try:
            self.tracker.record_phase_execution(execution)
        except BothStoresFailed as exc:
            self.events.emit(
                Event(
                    EventKind.BOTH_STORES_FAILED,
                    Severity.CRITICAL,
                    _component(phase),
                    f"the execution record of {phase.name} for {run_key} was lost: both "
                    f"stores failed ({exc}); the trigger itself is claimed and will be delivered",
                    run_key=run_key,
                    phase=phase.name,
                    correlation_id=correlation_id,
                    error=exc,
                ),
                already_logged=True,
            )
        self.events.emit(
            Event(
                EventKind.TRIGGER_CLAIMED,
                Severity.INFO,
                _component(phase),
                f"{phase.name} {reason.value} for {run_key}: triggering "
                f"{', '.join(trigger.ready) or '(no phase ready)'} as {trigger.trigger_id} "
                f"after {execution.duration_seconds:.1f}s",
                run_key=run_key,
                phase=phase.name,
                correlation_id=correlation_id,
                details={"trigger_id": trigger.trigger_id, "reason": reason.value},
            )
        )
        if self._on_claimed is not None:
            self._on_claimed(trigger)
        if any(
            len(self.pipeline.upstream(target)) > 1 and target not in trigger.ready
            for target in phase.next_phases
        ):
            # A fan-in phase this trigger could not name may be ready now (attempts.py).
            self.announce_ready(run_key)
        return TriggerResult(trigger, claimed=True, deferred=False)

    def claim_start_signal(self, signal: Trigger) -> TriggerResult:
        """Claim a start signal (rerun, backfill, ready): at most once per id."""
        outcome = self.tracker.claim_trigger(signal)
        component = _component(self.pipeline.phase(signal.phase))
        if outcome.deferred:
            self.events.emit(
                Event(
                    EventKind.CLAIM_DEFERRED,
                    Severity.WARNING,
                    component,
                    f"{signal.reason.value} start of {signal.phase} for {signal.run_key} "
                    "deferred: no store can decide it safely now",
                    run_key=signal.run_key,
                    phase=signal.phase,
                    correlation_id=signal.correlation_id,
                ),
                already_logged=True,
            )
            with self._state_lock:
                self._deferred.add(signal.run_key)
            return TriggerResult(signal, claimed=False, deferred=True)
        if not outcome.won:
            self._check_held(signal)
            return TriggerResult(signal, claimed=False, deferred=False)
        self.events.emit(
            Event(
                EventKind.TRIGGER_CLAIMED,
                Severity.INFO,
                component,
                f"{signal.phase} started for {signal.run_key} ({signal.reason.value}), "
                f"attempt {signal.attempt}, as {signal.trigger_id}",
                run_key=signal.run_key,
                phase=signal.phase,
                correlation_id=signal.correlation_id,
                details={"trigger_id": signal.trigger_id, "reason": signal.reason.value},
            )
        )
        if self._on_claimed is not None:
            self._on_claimed(signal)
        return TriggerResult(signal, claimed=True, deferred=False)

    def held(self, trigger: Trigger) -> bool:
        """Whether the outbox holds ``trigger``'s id (read after a lost claim)."""
        return any(
            e.trigger.trigger_id == trigger.trigger_id
            for e in self.tracker.triggers(trigger.run_key)
        )

    def _check_held(self, trigger: Trigger) -> None:
        # A lost claim means the store holds this id. A store that keys claims by phase
        # and run key (SQL schema version 1) may hold another trigger there instead: a
        # start signal beside the phase's own trigger. Say so loudly, once per claim.
        if self.held(trigger):
            return
        self.events.emit(
            Event(
                EventKind.UNEXPECTED_ERROR,
                Severity.CRITICAL,
                _component(self.pipeline.phase(trigger.phase)),
                f"{trigger.reason.value} trigger {trigger.trigger_id} of {trigger.phase} for "
                f"{trigger.run_key} (attempt {trigger.attempt}) lost its claim to another "
                "trigger of the same phase and run: the store keys claims by phase and run "
                f"key; {reruns.OUTBOX_UPGRADE}",
                run_key=trigger.run_key,
                phase=trigger.phase,
                details={"trigger_id": trigger.trigger_id, "reason": trigger.reason.value},
            )
        )

    def announce_ready(self, run_key: str) -> list[TriggerResult]:
        """Claim a ``ready`` start signal for each phase of ``run_key`` that is ready but
        named by no message (two upstream phases triggered at once, or after a rerun)."""
        attempts = self.attempts(run_key)
        now = self.clock.now()
        return [
            self.claim_start_signal(
                Trigger.start_signal(
                    self.pipeline.name,
                    phase,
                    run_key,
                    attempts.attempt(phase),
                    TriggerReason.READY,
                    now,
                )
            )
            for phase in attempts.unannounced_ready()
        ]

    def rerun(
        self, phase: str, run_key: str, *, correlation_id: str | None = None
    ) -> TriggerResult:
        """Start attempt N+1 of ``phase`` and every phase downstream for ``run_key``
        (see :mod:`phasegate.reruns`); the same rerun asked again answers the same signal."""
        return reruns.rerun(self, phase, run_key, correlation_id=correlation_id)

    # -- reading state -------------------------------------------------------------------

    def attempts(self, run_key: str, triggers: Sequence[OutboxEntry] | None = None) -> RunAttempts:
        """The attempts, triggers and start signals of ``run_key`` (read unless given)."""
        if triggers is None:
            triggers = self.tracker.triggers(run_key)
        attempts = RunAttempts.from_triggers(self.pipeline.graph, run_key, triggers)
        self._book.learn(attempts)
        return attempts

    def phase_status(
        self,
        phase: str,
        run_key: str,
        *,
        completions: Sequence[Completion] | None = None,
        triggers: Sequence[OutboxEntry] | None = None,
    ) -> PhaseStatus:
        """Evaluate one phase of one run, at its current attempt, from both stores."""
        return self._phase_state(phase, run_key, completions=completions, triggers=triggers)[0]

    def _phase_state(
        self,
        phase: str,
        run_key: str,
        *,
        completions: Sequence[Completion] | None = None,
        triggers: Sequence[OutboxEntry] | None = None,
    ) -> tuple[PhaseStatus, RunAttempts]:
        definition = self.pipeline.phase(phase)
        if completions is None:
            completions = self.tracker.completions(run_key, phase)
        attempts = self.attempts(run_key, triggers)
        status = evaluate_phase(definition, run_key, completions, attempts, self.clock.now())
        return status, attempts

    @alerts_unexpected("orchestrator")
    def run_status(self, run_key: str) -> list[PhaseStatus]:
        """Every phase of ``run_key``, in pipeline order, from one read of each kind."""
        return self._run_state(run_key)[0]

    def _run_state(self, run_key: str) -> tuple[list[PhaseStatus], RunAttempts]:
        self.pipeline.validate_run_key(run_key)
        completions = self.tracker.completions(run_key)
        attempts = self.attempts(run_key)
        now = self.clock.now()
        statuses = [
            evaluate_phase(p, run_key, completions, attempts, now) for p in self.pipeline.phases
        ]
        return statuses, attempts

    def list_runs(self, limit: int = 50) -> list[str]:
        """The most recent run keys, newest first."""
        return self.tracker.list_runs(limit)

    # -- overrides and sweeps ------------------------------------------------------------

    @alerts_unexpected("orchestrator")
    def trigger(
        self,
        phase: str,
        run_key: str,
        *,
        reason: TriggerReason = TriggerReason.MANUAL,
        correlation_id: str | None = None,
    ) -> TriggerResult:
        """Trigger ``phase`` for ``run_key`` now, complete or not; still at most once."""
        definition = self.pipeline.phase(phase)
        self.pipeline.validate_run_key(run_key)
        status, attempts = self._phase_state(phase, run_key)
        if status.trigger is not None:
            return TriggerResult(status.trigger.trigger, claimed=False, deferred=False)
        return self._claim(
            definition, run_key, reason, correlation_id or uuid.uuid4().hex, status, attempts
        )

    @alerts_unexpected("orchestrator")
    def sweep(self, runs: int = 50) -> list[TriggerResult]:
        """Claim phases that are complete but not triggered (after a crash or a deferral)."""
        with self._state_lock:
            deferred = set(self._deferred)
        return self.sweep_runs(sorted(set(self.tracker.list_runs(runs)) | deferred))

    @alerts_unexpected("orchestrator")
    def retry_deferred(self) -> list[TriggerResult]:
        """Sweep the runs whose claims this process deferred (the primary is back)."""
        with self._state_lock:
            deferred = sorted(self._deferred)
        return self.sweep_runs(deferred) if deferred else []

    @alerts_unexpected("orchestrator")
    def sweep_runs(self, run_keys: Iterable[str]) -> list[TriggerResult]:
        """Claim the phases of ``run_keys`` that are complete but not triggered, and the
        ``ready`` signals of phases ready but never named (after a crash or a deferral)."""
        results = []
        for run_key in run_keys:
            with self._state_lock:
                self._deferred.discard(run_key)
            statuses, attempts = self._run_state(run_key)
            for status in statuses:
                if status.state is PhaseState.COMPLETE:
                    results.append(
                        self._claim(
                            self.pipeline.phase(status.phase),
                            run_key,
                            TriggerReason.COMPLETE,
                            None,
                            status,
                            attempts,
                        )
                    )
            if attempts.unannounced_ready():
                results.extend(self.announce_ready(run_key))
        return results


def _string(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(
            field, f"expected a string, got {_json_type(value)}", code="wrong_type"
        )
    if not value:
        raise ValidationError(field, "must not be empty", code="wrong_type")
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _metadata(value: object) -> tuple[dict[str, Any], str]:
    """The metadata as a plain dict and as the compact JSON stored; checked once."""
    if value is None:
        return {}, "{}"
    if not isinstance(value, Mapping):
        raise ValidationError(
            "metadata", f"expected a JSON object, got {_json_type(value)}", code="wrong_type"
        )
    try:
        encoded = json.dumps(dict(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError("metadata", f"not JSON-serialisable: {exc}") from exc
    size = len(encoded.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValidationError(
            "metadata",
            f"{size} bytes of JSON; at most {MAX_METADATA_BYTES} allowed",
            code="too_large",
        )
    if not value:
        return {}, "{}"
    # Decoding what was encoded yields plain JSON types (tuples become lists, ...).
    decoded: dict[str, Any] = json.loads(encoded)
    return decoded, encoded


def _superseded(write: BatchWriteResult) -> bool:
    """Whether a rerun marked any phase-run of this write as superseded (see reruns.py)."""
    return any(reruns.SUPERSEDED in names for names in write.successes().values())
