"""The sweeps of the orchestrator: claiming what is complete but untriggered — after a
crash between a report and its claim, after a deferred claim, or after a replica that
deferred a claim died with what it knew."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from phasegate.model import PhaseState, TriggerReason
from phasegate.results import TriggerResult
from phasegate.status import evaluate_phase
from phasegate.unexpected import alerts_unexpected

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence

    from phasegate.attempts import RunAttempts
    from phasegate.clock import Clock
    from phasegate.config import Phase, Pipeline
    from phasegate.model import OutboxEntry
    from phasegate.status import PhaseStatus
    from phasegate.tracker import CompletionTracker

log = logging.getLogger(__name__)


class Sweeping:
    """Mixed into :class:`~phasegate.orchestrator.Orchestrator`: the sweeps.

    It uses the orchestrator's state, reads and claims, declared here for the type checker.
    """

    pipeline: Pipeline
    tracker: CompletionTracker
    clock: Clock
    _state_lock: threading.Lock
    _deferred: set[str]
    _rolling_after: str | None

    if TYPE_CHECKING:

        def attempts(
            self, run_key: str, triggers: Sequence[OutboxEntry] | None = None
        ) -> RunAttempts: ...

        def _run_state(self, run_key: str) -> tuple[list[PhaseStatus], RunAttempts]: ...

        def _claim(
            self,
            phase: Phase,
            run_key: str,
            reason: TriggerReason,
            correlation_id: str | None,
            status: PhaseStatus,
            attempts: RunAttempts,
        ) -> TriggerResult: ...

        def announce_ready(self, run_key: str) -> list[TriggerResult]: ...

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

    @property
    def rolling_turn_over(self) -> bool:
        """Whether the rolling sweep's last step ended a turn (the next starts over)."""
        return self._rolling_after is None

    @alerts_unexpected("orchestrator")
    def sweep_rolling(self, page: int = 200, horizon: int = 10_000) -> list[TriggerResult]:
        """One step of the rolling sweep: the next ``page`` of the ``horizon`` most recent
        runs (oldest first, wrapping around), read together and claimed where a phase is
        complete but untriggered.

        :meth:`sweep` looks at the most recent runs and at the runs whose claims this
        process deferred; a replica that deferred a claim and then crashed took that
        memory with it, and the run may be old by the time the primary is back. The
        rolling sweep finds such a phase-run within one turn (``horizon`` / ``page``
        maintenance passes) on whichever replica is alive.
        """
        keys = sorted(self.tracker.list_runs(horizon))
        after = self._rolling_after
        chosen = [key for key in keys if after is None or key > after][:page]
        with self._state_lock:
            self._rolling_after = chosen[-1] if len(chosen) == page else None
        if not chosen:
            return []
        completions = self.tracker.completions_of_runs(chosen)
        triggers = self.tracker.triggers_of_runs(chosen)
        now = self.clock.now()
        stale = []
        for key in chosen:
            attempts = self.attempts(key, triggers[key])
            if attempts.unannounced_ready() or any(
                evaluate_phase(phase, key, completions[key], attempts, now).state
                is PhaseState.COMPLETE
                for phase in self.pipeline.phases
            ):
                stale.append(key)
        if stale:
            # Often a claim still in flight on another thread or replica: not a warning.
            log.info(
                "rolling sweep: %d run(s) had a complete phase left untriggered (%s)",
                len(stale),
                ", ".join(stale[:5]) + (" ..." if len(stale) > 5 else ""),
            )
        return self.sweep_runs(stale) if stale else []

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
