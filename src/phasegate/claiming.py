"""The claiming half of the orchestrator: turning a complete phase-run (or an operator's
word, or a start signal) into exactly one claimed trigger, and the sweeps that claim what
was deferred or left behind."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
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
from phasegate.results import TriggerResult, _Claimed
from phasegate.unexpected import alerts_unexpected

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Sequence
    from datetime import datetime

    from phasegate.clock import Clock
    from phasegate.config import Pipeline
    from phasegate.events import EventBus
    from phasegate.model import OutboxEntry
    from phasegate.status import PhaseStatus
    from phasegate.tracker import ClaimOutcome, CompletionTracker

log = logging.getLogger(__name__)


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
                    component(phase),
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
                self._deferring = True
            return TriggerResult(trigger, claimed=False, deferred=True)
        if not outcome.won:
            self._check_held(trigger)
            return TriggerResult(trigger, claimed=False, deferred=False)
        self._deferral_over(phase)
        execution = self._record_execution(phase, trigger, status, now)
        self.events.emit(
            Event(
                EventKind.TRIGGER_CLAIMED,
                Severity.INFO,
                component(phase),
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

    def _record_execution(
        self, phase: Phase, trigger: Trigger, status: PhaseStatus, now: datetime
    ) -> PhaseExecution:
        """Keep how the phase-run went; losing that record is alerted, never fatal: the
        trigger itself is claimed and will be delivered."""
        execution = PhaseExecution(
            phase=phase.name,
            run_key=trigger.run_key,
            started_at=min(status.started_at or now, now),
            triggered_at=now,
            processors=status.succeeded,
            reason=trigger.reason,
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
                    component(phase),
                    f"the execution record of {phase.name} for {trigger.run_key} was lost: "
                    f"both stores failed ({exc}); the trigger itself is claimed and will be "
                    "delivered",
                    run_key=trigger.run_key,
                    phase=phase.name,
                    correlation_id=trigger.correlation_id,
                    error=exc,
                ),
                already_logged=True,
            )
        return execution

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
