"""Claims made in the write itself: the triggers a batch of completions completes,
claimed in the primary's transaction of that batch.

Where the primary's writer makes claims anyway (SQLite: each claim rides its next
transaction) and only the primary decides claims (the "defer" policy), a phase-run the
batch completes is claimed in the batch's own commit: the primary answers the write,
the run's triggers are read there, and each trigger is claimed by the same
compare-and-set, execution record beside it, as :mod:`phasegate.claiming` would a
moment later in a transaction of its own. That saves the claimant a read of both stores
and a second commit, and saves every other report of the phase-run the wait for them.

What the transaction cannot see is left to the usual path: a phase-run complete only
with the backup's reports (a run the primary misses never takes this way), one a rerun
superseded, and any batch whose first attempt failed. After the commit the winners are
copied to the backup, announced and handed to the dispatcher, as any claim is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phasegate import reruns
from phasegate.claiming import _Wanted, judge
from phasegate.errors import PhasegateError
from phasegate.events import EventBus
from phasegate.model import Answered, Completion, PhaseExecution, PhaseRun, Trigger
from phasegate.results import _Claimed
from phasegate.status import phase_status
from phasegate.stores.guarded import StoreRole
from phasegate.unexpected import announce_unexpected

if TYPE_CHECKING:
    from phasegate.attempts import RunAttempts
    from phasegate.clock import Clock
    from phasegate.config import Phase, Pipeline
    from phasegate.model import OutboxEntry
    from phasegate.stores.base import ClaimsAfter, ClaimsInTransaction
    from phasegate.tracker import BatchWriteResult, CompletionTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InWrite:
    """What the claims made in a write's transaction decided: an answer per phase-run the
    primary saw complete, and the triggers won (each with its execution record)."""

    decided: Mapping[PhaseRun, _Claimed]
    won: Sequence[tuple[_Wanted, Trigger, PhaseExecution]]


class WriteClaims:
    """Mixed into :class:`~phasegate.orchestrator.Orchestrator`: claims in the write."""

    pipeline: Pipeline
    tracker: CompletionTracker
    events: EventBus
    clock: Clock

    if TYPE_CHECKING:

        def attempts(
            self, run_key: str, triggers: Sequence[OutboxEntry] | None = None
        ) -> RunAttempts: ...

        def _deferral_over(self, phase: Phase) -> None: ...

        def _claimed(self, w: _Wanted, trigger: Trigger, execution: PhaseExecution) -> None: ...

    def _claims_after(self, completions: Sequence[Completion]) -> ClaimsAfter | None:
        """The claims to make in the primary's write of ``completions``, or ``None`` where
        they cannot be made there (see the module docstring)."""
        tracker = self.tracker
        if not tracker.claims_after_writes:
            return None
        keys = {c.run_key for c in completions}
        if any(tracker.replicator.misses(StoreRole.PRIMARY, key) for key in keys):
            return None
        # Each phase-run's correlation id: its first report's in the batch.
        correlations = {c.phase_run: c.correlation_id for c in reversed(completions)}

        def claim(claims: ClaimsInTransaction, answers: dict[PhaseRun, Answered]) -> InWrite:
            return self._claim_in_write(claims, answers, correlations)

        return claim

    def _claim_in_write(
        self,
        claims: ClaimsInTransaction,
        answers: Mapping[PhaseRun, Answered],
        correlations: Mapping[PhaseRun, str | None],
    ) -> InWrite:
        """Claim what the primary's answers show complete, in the write's transaction.

        Runs on the primary's writer thread: it reads and claims through ``claims`` only,
        and never waits on a store, an event or a lock another writer call could hold."""
        complete = sorted(
            run
            for run, answer in answers.items()
            if reruns.SUPERSEDED not in answer
            and set(self.pipeline.phase(run.phase).processors) <= answer
        )
        # Decided earlier in this transaction (another report of the run in the batch).
        decided = {
            run: _Claimed(claims.decided[run], claimed=False, deferred=False)
            for run in complete
            if run in claims.decided
        }
        complete = [run for run in complete if run not in decided]
        if not complete:
            return InWrite(decided, ())
        found = claims.triggers_of_runs(sorted({run.run_key for run in complete}))
        now = self.clock.now()
        wanted: list[tuple[PhaseRun, _Wanted]] = []
        for run in complete:
            attempts = self.attempts(run.run_key, found[run.run_key])
            definition = self.pipeline.phase(run.phase)
            status_now = phase_status(definition, run.run_key, answers[run], attempts, now)
            judged = judge(run, definition, status_now, attempts, correlations.get(run))
            if isinstance(judged, _Wanted):
                wanted.append((run, judged))
            else:
                decided[run] = judged
        winners: list[tuple[_Wanted, Trigger, PhaseExecution]] = []
        if wanted:
            triggers = [w.trigger(self.pipeline.name, now) for _, w in wanted]
            executions = [w.execution(t, now) for (_, w), t in zip(wanted, triggers, strict=True)]
            won = claims.claim_triggers(triggers, executions)
            for (run, w), trigger, execution, first in zip(
                wanted, triggers, executions, won, strict=True
            ):
                decided[run] = _Claimed(trigger.trigger_id, claimed=first, deferred=False)
                if first:
                    winners.append((w, trigger, execution))
        # Last, once nothing here can fail: the transaction's later calls rely on it.
        claims.decided.update(
            (run, answer.trigger_id)
            for run, answer in decided.items()
            if answer.trigger_id is not None and run in complete
        )
        return InWrite(decided, winners)

    def _written_unheard(self, write: BatchWriteResult) -> None:
        """A write whose caller was cancelled while it was under way (run on a thread once
        it is done): a claim it made is still copied to the backup, announced and handed
        to the dispatcher. Whatever else it completed is the sweep's, as any phase-run
        left complete and unclaimed is."""
        self._claimed_in_write(write)

    def _claimed_in_write(self, write: BatchWriteResult) -> dict[PhaseRun, _Claimed]:
        """After the write: copy what it claimed to the backup, announce it and wake the
        dispatcher; the answers of the phase-runs it decided (the others take the usual
        path). Blocks on the backup's writer when something was won."""
        followed = write.followed
        if isinstance(followed, Exception):
            # Undone in its savepoint, the write kept: the usual path claims instead. A
            # store's own error is the usual path's to meet again; anything else is a bug.
            if isinstance(followed, PhasegateError):
                log.warning("claims in the write failed (%s); claiming apart", followed)
            else:
                announce_unexpected(followed, "orchestrator", "claims in the write", self.events)
            return {}
        if not isinstance(followed, InWrite):
            return {}
        if followed.won:
            self.tracker.arbiter.mirror_claims(
                [trigger for _, trigger, _ in followed.won],
                [execution for _, _, execution in followed.won],
            )
            for w, trigger, execution in followed.won:
                self._deferral_over(w.phase)
                self._claimed(w, trigger, execution)
        return dict(followed.decided)


def won_in_write(write: BatchWriteResult) -> bool:
    """Whether the write claimed a trigger in its transaction (its copy to the backup is
    then still to be made, a wait on the backup's writer)."""
    followed = write.followed
    return isinstance(followed, InWrite) and bool(followed.won)
