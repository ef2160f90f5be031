"""The claiming half of the orchestrator: turning a complete phase-run (or an operator's
word, or a start signal) into exactly one claimed trigger. The sweeps that claim what
was deferred or left behind are in :mod:`phasegate.sweeping`."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phasegate import reruns
from phasegate.attempts import RunAttempts
from phasegate.config import Phase
from phasegate.errors import BothStoresFailed
from phasegate.events import Event, EventKind, Severity
from phasegate.model import (
    Completion,
    PhaseExecution,
    PhaseRun,
    PhaseState,
    Trigger,
    TriggerReason,
    trigger_id_for,
)
from phasegate.results import Decisions, TriggerResult, _Claimed
from phasegate.status import evaluate_phase, phase_status
from phasegate.unexpected import alerts_unexpected

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from phasegate.clock import Clock
    from phasegate.config import Pipeline
    from phasegate.events import EventBus
    from phasegate.model import Answered, OutboxEntry
    from phasegate.status import PhaseStatus
    from phasegate.tracker import BatchWriteResult, CompletionTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Wanted:
    """A trigger to claim: which phase-run, why, and its state when it was read."""

    phase: Phase
    run_key: str
    reason: TriggerReason
    correlation_id: str | None
    status: PhaseStatus
    attempts: RunAttempts

    def trigger(self, pipeline: str, now: datetime) -> Trigger:
        """The trigger this claim would make at ``now``."""
        phase, status = self.phase, self.status
        return Trigger(
            trigger_id=trigger_id_for(pipeline, phase.name, self.run_key, status.attempt),
            pipeline=pipeline,
            phase=phase.name,
            next_phase=phase.next,
            run_key=self.run_key,
            reason=self.reason,
            triggered_at=now,
            correlation_id=self.correlation_id,
            processors=status.succeeded,
            missing=status.missing if self.reason is not TriggerReason.COMPLETE else (),
            attempt=status.attempt,
            next_phases=phase.next_phases,
            ready_phases=self.attempts.ready_in_trigger_of(phase.name),
        )

    def execution(self, trigger: Trigger, now: datetime) -> PhaseExecution:
        """How the phase-run went, if ``trigger`` wins its claim at ``now``."""
        return PhaseExecution(
            phase=self.phase.name,
            run_key=self.run_key,
            started_at=min(self.status.started_at or now, now),
            triggered_at=now,
            processors=self.status.succeeded,
            reason=self.reason,
            trigger_id=trigger.trigger_id,
            attempt=self.status.attempt,
        )


def judge(
    run: PhaseRun,
    definition: Phase,
    status_now: PhaseStatus,
    attempts: RunAttempts,
    correlation_id: str | None,
) -> _Claimed | _Wanted:
    """What a phase-run a write completed needs, from its state read after the write: the
    trigger already claimed, nothing (a rerun superseded it), or a claim."""
    if status_now.trigger is not None:
        return _Claimed(status_now.trigger.trigger.trigger_id, claimed=False, deferred=False)
    if status_now.attempt != run.attempt or status_now.state is not PhaseState.COMPLETE:
        # Superseded by a rerun between the write and this read: nothing to claim.
        return _Claimed(None, claimed=False, deferred=False)
    reason = TriggerReason.COMPLETE
    return _Wanted(definition, run.run_key, reason, correlation_id, status_now, attempts)


def component(phase: Phase) -> str:
    """How alerts name a phase: ``phase2_to_phase3``, or the last phase's own name."""
    return f"{phase.name}_to_{'+'.join(phase.next_phases)}" if phase.next_phases else phase.name


class Claiming:
    """Mixed into :class:`~phasegate.orchestrator.Orchestrator`: every path to a claim.

    It uses the orchestrator's state and reads, declared here for the type checker.
    """

    pipeline: Pipeline
    tracker: CompletionTracker
    events: EventBus
    clock: Clock
    _state_lock: threading.Lock
    _deferred: set[str]
    _deferring: bool
    _decisions: Decisions
    _on_claimed: Callable[[Trigger], None] | None

    if TYPE_CHECKING:

        def attempts(
            self, run_key: str, triggers: Sequence[OutboxEntry] | None = None
        ) -> RunAttempts: ...

        def _phase_state(
            self,
            phase: str,
            run_key: str,
            *,
            completions: Sequence[Completion] | None = None,
            triggers: Sequence[OutboxEntry] | None = None,
        ) -> tuple[PhaseStatus, RunAttempts]: ...

        def _run_state(self, run_key: str) -> tuple[list[PhaseStatus], RunAttempts]: ...

    def _trigger_completed(
        self,
        runs: Sequence[PhaseRun],
        completions: Sequence[Completion],
        write: BatchWriteResult,
    ) -> dict[PhaseRun, _Claimed]:
        """Claim the triggers of the phase-runs a batch completed, decided together, each
        phase-run once in this process (see :class:`~phasegate.results.Decisions`); only
        the caller that decides reads the stores' answers."""
        return self._decisions.decide(
            runs, lambda mine: self._decide(mine, completions, write.answers())
        )

    def _decide(
        self,
        runs: Sequence[PhaseRun],
        completions: Sequence[Completion],
        answered: Mapping[PhaseRun, Answered | None],
    ) -> dict[PhaseRun, _Claimed]:
        """Decide from the stores' own answers to the write: what stands of each
        phase-run. Only a store that answered its successes alone has its phase-runs read
        back; the run's triggers (its attempts, and a claim already made) are always read."""
        decided: dict[PhaseRun, _Claimed] = {}
        wanted: list[tuple[PhaseRun, _Wanted]] = []
        keys = sorted({run.run_key for run in runs})
        unknown = sorted({run.run_key for run in runs if answered.get(run) is None})
        # Each phase-run's correlation id: its first report's in the batch.
        correlations = {c.phase_run: c.correlation_id for c in reversed(completions)}
        completed = self.tracker.completions_of_runs(unknown) if unknown else {}
        claimed = self.tracker.triggers_of_runs(keys) if keys else {}
        now = self.clock.now()
        for run in runs:
            attempts = self.attempts(run.run_key, claimed[run.run_key])
            definition = self.pipeline.phase(run.phase)
            answer = answered.get(run)
            if answer is None:
                of_run = completed[run.run_key]
                status_now = evaluate_phase(definition, run.run_key, of_run, attempts, now)
            else:
                status_now = phase_status(definition, run.run_key, answer, attempts, now)
            judged = judge(run, definition, status_now, attempts, correlations.get(run))
            if isinstance(judged, _Wanted):
                wanted.append((run, judged))
            else:
                decided[run] = judged
        outcomes = self._claim_all([w for _, w in wanted])
        for (run, _), outcome in zip(wanted, outcomes, strict=True):
            decided[run] = _Claimed(
                None if outcome.deferred else outcome.trigger.trigger_id,
                claimed=outcome.claimed,
                deferred=outcome.deferred,
            )
        return decided

    def _claim(
        self,
        phase: Phase,
        run_key: str,
        reason: TriggerReason,
        correlation_id: str | None,
        status: PhaseStatus,
        attempts: RunAttempts,
    ) -> TriggerResult:
        wanted = _Wanted(phase, run_key, reason, correlation_id, status, attempts)
        [result] = self._claim_all([wanted])
        return result

    def _claim_all(self, wanted: Sequence[_Wanted]) -> list[TriggerResult]:
        """Claim each wanted trigger exactly once: decided together, one outcome each."""
        if not wanted:
            return []
        now = self.clock.now()
        triggers = [w.trigger(self.pipeline.name, now) for w in wanted]
        executions = [w.execution(t, now) for w, t in zip(wanted, triggers, strict=True)]
        # Kept with the claims where the stores can (see CompletionTracker.claim_triggers).
        outcomes = self.tracker.claim_triggers(triggers, executions)
        results: list[TriggerResult] = []
        won: list[tuple[_Wanted, Trigger, PhaseExecution]] = []
        unrecorded: list[tuple[Phase, Trigger, PhaseExecution]] = []
        for w, trigger, record, outcome in zip(wanted, triggers, executions, outcomes, strict=True):
            if outcome.deferred:
                self._claim_deferred(w)
                results.append(TriggerResult(trigger, claimed=False, deferred=True))
            elif not outcome.won:
                # Lost to the same id (another replica, a duplicate report). Only a start
                # signal can lose to another trigger, on a phase-keyed outbox: see
                # claim_start_signal; no read here, on the hot path of every batch.
                results.append(TriggerResult(trigger, claimed=False, deferred=False))
            else:
                self._deferral_over(w.phase)
                won.append((w, trigger, record))
                if not outcome.execution_kept:
                    unrecorded.append((w.phase, trigger, record))
                results.append(TriggerResult(trigger, claimed=True, deferred=False))
        self._record_executions(unrecorded)
        for w, trigger, execution in won:
            self._claimed(w, trigger, execution)
        return results

    def _claim_deferred(self, w: _Wanted) -> None:
        self.events.emit(
            Event(
                EventKind.CLAIM_DEFERRED,
                Severity.WARNING,
                component(w.phase),
                f"trigger of {w.phase.name} for {w.run_key} deferred: no store can decide it "
                "safely now; the next sweep will",
                run_key=w.run_key,
                phase=w.phase.name,
                correlation_id=w.correlation_id,
            ),
            already_logged=True,
        )
        with self._state_lock:
            self._deferred.add(w.run_key)
            self._deferring = True

    def _claimed(self, w: _Wanted, trigger: Trigger, execution: PhaseExecution) -> None:
        phase = w.phase
        self.events.emit(
            Event(
                EventKind.TRIGGER_CLAIMED,
                Severity.INFO,
                component(phase),
                f"{phase.name} {w.reason.value} for {w.run_key}: triggering "
                f"{', '.join(trigger.ready) or '(no phase ready)'} as {trigger.trigger_id} "
                f"after {execution.duration_seconds:.1f}s",
                run_key=w.run_key,
                phase=phase.name,
                correlation_id=w.correlation_id,
                details={"trigger_id": trigger.trigger_id, "reason": w.reason.value},
            )
        )
        if self._on_claimed is not None:
            self._on_claimed(trigger)
        if any(
            len(self.pipeline.upstream(target)) > 1 and target not in trigger.ready
            for target in phase.next_phases
        ):
            # A fan-in phase this trigger could not name may be ready now (attempts.py).
            self.announce_ready(w.run_key)

    def _record_executions(self, done: Sequence[tuple[Phase, Trigger, PhaseExecution]]) -> None:
        """Keep how the phase-runs went; losing those records is alerted, never fatal:
        the triggers themselves are claimed and will be delivered."""
        if not done:
            return
        try:
            if len(done) == 1:
                self.tracker.record_phase_execution(done[0][2])
            else:
                self.tracker.record_phase_executions([execution for _, _, execution in done])
        except BothStoresFailed as exc:
            for phase, trigger, execution in done:
                self.events.emit(
                    Event(
                        EventKind.BOTH_STORES_FAILED,
                        Severity.CRITICAL,
                        component(phase),
                        f"the execution record of {phase.name} for {execution.run_key} was "
                        f"lost: both stores failed ({exc}); the trigger itself is claimed and "
                        "will be delivered",
                        run_key=execution.run_key,
                        phase=phase.name,
                        correlation_id=trigger.correlation_id,
                        error=exc,
                    ),
                    already_logged=True,
                )

    def _deferral_over(self, phase: Phase) -> None:
        """After a claim: once no claim waits any more, say so (resolves the one folded
        ``claim_deferred`` alert an outage raised)."""
        with self._state_lock:
            over = self._deferring and not self._deferred
            if over:
                self._deferring = False
        if over:
            self.events.emit(
                Event(
                    EventKind.CLAIM_DEFERRED,
                    Severity.RESOLVED,
                    component(phase),
                    "every claim deferred while the primary was out has been made",
                )
            )

    def claim_start_signal(self, signal: Trigger) -> TriggerResult:
        """Claim a start signal (rerun, backfill, ready): at most once per id."""
        outcome = self.tracker.claim_trigger(signal)
        where = component(self.pipeline.phase(signal.phase))
        if outcome.deferred:
            self.events.emit(
                Event(
                    EventKind.CLAIM_DEFERRED,
                    Severity.WARNING,
                    where,
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
                self._deferring = True
            return TriggerResult(signal, claimed=False, deferred=True)
        if not outcome.won:
            self._check_held(signal)
            return TriggerResult(signal, claimed=False, deferred=False)
        self.events.emit(
            Event(
                EventKind.TRIGGER_CLAIMED,
                Severity.INFO,
                where,
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
                component(self.pipeline.phase(trigger.phase)),
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
