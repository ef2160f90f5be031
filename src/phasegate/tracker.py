"""Dual-write: every record goes to a primary and a backup store; reads merge both.

The tracker composes four parts, each in its own module:

- :class:`~phasegate.stores.guarded.GuardedStore`: one store with its breaker, retry
  policy and counters;
- :class:`~phasegate.replicator.Replicator`: catches a recovered store up in the
  background with the run keys it missed;
- :class:`~phasegate.claims.ClaimArbiter`: decides claims by the claim policy;
- :class:`~phasegate.reads.MergedReads`: reads that merge both stores.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from phasegate.claims import ClaimArbiter, ClaimOutcome, ClaimPolicy, ClaimRequest, trigger_claim
from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.errors import BothStoresFailed, StoreError
from phasegate.events import EventBus
from phasegate.model import (
    Completion,
    PhaseExecution,
    RecordSet,
    TimeoutReport,
    Trigger,
)
from phasegate.outbox_writes import OutboxWrites
from phasegate.reads import MergedReads, ReadsBothStores
from phasegate.replicator import Replicator
from phasegate.resilience.breaker import CircuitBreaker
from phasegate.resilience.retry import BACKUP_WRITE_POLICY, PRIMARY_WRITE_POLICY, RetryPolicy
from phasegate.stores.base import (
    Capability,
    ClaimsAfter,
    Store,
    record_phase_executions,
)
from phasegate.stores.guarded import (
    Counters,
    GuardedStore,
    PendingWrite,
    StoreRole,
    guard,
    settle_all,
    wait_all,
)
from phasegate.writes import BatchWriteResult, DualWriteResult

log = logging.getLogger(__name__)

__all__ = [
    "BatchWriteResult",
    "ClaimOutcome",
    "ClaimPolicy",
    "CompletionTracker",
    "DualWriteResult",
    "StoreRole",
]

_OUTCOMES = {
    (True, True): "both",
    (True, False): "primary_only",
    (False, True): "backup_only",
    (False, False): "none",
}


class CompletionTracker(OutboxWrites, ReadsBothStores):
    """Dual-writes completions and every other record to a primary and a backup store."""

    def __init__(
        self,
        primary: Store,
        backup: Store,
        *,
        primary_policy: RetryPolicy = PRIMARY_WRITE_POLICY,
        backup_policy: RetryPolicy = BACKUP_WRITE_POLICY,
        breaker_reset: float = 30.0,
        claim_policy: ClaimPolicy = ClaimPolicy.DEFER,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        replicate_every: float = 1.0,
        events: EventBus | None = None,
    ) -> None:
        self._clock = clock
        self._counters = Counters()
        rng = rng or random.Random()
        self._primary = guard(
            primary,
            StoreRole.PRIMARY,
            policy=primary_policy,
            breaker_reset=breaker_reset,
            counters=self._counters,
            clock=clock,
            rng=rng,
        )
        self._backup = guard(
            backup,
            StoreRole.BACKUP,
            policy=backup_policy,
            breaker_reset=breaker_reset,
            counters=self._counters,
            clock=clock,
            rng=rng,
        )
        self.replicator = Replicator(
            self._primary,
            self._backup,
            counters=self._counters,
            interval=replicate_every,
            clock=clock,
            events=events,
        )
        self.arbiter = ClaimArbiter(
            self._primary,
            self._backup,
            self.replicator,
            policy=claim_policy,
            counters=self._counters,
        )
        self.reads = MergedReads(self._primary, self._backup, events=self.replicator.events)
        # Claims made in the primary's own write of what completes them (``then`` in
        # record_completions): under "defer" (only the primary decides claims), on a
        # store that claims inside its writer's transactions. False: claims apart.
        self.claims_after_writes = claim_policy is ClaimPolicy.DEFER and bool(
            getattr(primary, "claims_ride_writer", False)
        )
        # Threads start on first use only: stores with their own writer never need them.
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="phasegate-write")

    # -- introspection -------------------------------------------------------------------

    @property
    def primary(self) -> Any:
        """The primary store."""
        return self._primary.store

    @property
    def backup(self) -> Any:
        """The backup store."""
        return self._backup.store

    @property
    def primary_breaker(self) -> CircuitBreaker:
        """The primary store's circuit breaker."""
        return self._primary.breaker

    @property
    def backup_breaker(self) -> CircuitBreaker:
        """The backup store's circuit breaker."""
        return self._backup.breaker

    @property
    def claim_policy(self) -> ClaimPolicy:
        """The claim policy in force."""
        return self.arbiter.policy

    @property
    def clock(self) -> Clock:
        """The clock this tracker (and whatever is built on it) uses."""
        return self._clock

    def counts(self) -> dict[str, int]:
        """Counters such as ``retries.primary``, ``writes.backup.failed``, ``both_failed``."""
        return self._counters.snapshot()

    def missed_run_keys(self, role: StoreRole) -> frozenset[str]:
        """Run keys that ``role`` missed writes for and has not been caught up on yet."""
        return self.replicator.missed(role)

    def resync(self) -> dict[StoreRole, frozenset[str]]:
        """Catch up any store that missed writes now, breaker open or not; returns what is
        still missed."""
        return self.replicator.run_once(force=True)

    # -- writing -------------------------------------------------------------------------

    def record_completions(
        self, completions: Sequence[Completion], then: ClaimsAfter | None = None
    ) -> BatchWriteResult:
        """Write a batch to both stores at once; raise BothStoresFailed if neither took it.

        The result's :meth:`~BatchWriteResult.successes` is the merged view of each
        phase-run's successes: a processor that succeeded in either store counts.
        ``then`` (with ``claims_after_writes``) runs in the primary's transaction of the
        batch; what it returned is :attr:`BatchWriteResult.followed`."""
        then = then if self.claims_after_writes else None
        primary = self._primary.begin_completions(completions, self._pool.submit, then)
        backup = self._backup.begin_completions(completions, self._pool.submit)
        primary_outcome, backup_outcome = settle_all([primary, backup])
        return self._batch_result(completions, primary_outcome, backup_outcome)

    async def arecord_completions(
        self,
        completions: Sequence[Completion],
        then: ClaimsAfter | None = None,
        orphaned: Callable[[BatchWriteResult], object] | None = None,
    ) -> BatchWriteResult:
        """:meth:`record_completions` for an event loop: the writes are queued on each
        store's writer and awaited, with no thread hand-off of the caller's own.

        A caller cancelled while the writes are under way (a shutdown's timeout, a
        library caller's own) does not stop them: they are then awaited on a thread,
        retries included, and their result handed to ``orphaned`` there (what a claim
        made in the write still needs: its copy to the backup, its announcement)."""
        then = then if self.claims_after_writes else None
        primary = self._primary.begin_completions(completions, self._pool.submit, then)
        backup = self._backup.begin_completions(completions, self._pool.submit)
        try:
            primary_outcome, backup_outcome = await wait_all([primary, backup])
        except asyncio.CancelledError:
            if orphaned is not None:
                try:
                    self._pool.submit(self._orphaned, completions, primary, backup, orphaned)
                except RuntimeError:  # the tracker is closing: its writers finish the writes
                    log.warning("a cancelled write's follow-up could not start: closing")
            raise
        return self._batch_result(completions, primary_outcome, backup_outcome)

    def _orphaned(
        self,
        completions: Sequence[Completion],
        primary: PendingWrite,
        backup: PendingWrite,
        then: Callable[[BatchWriteResult], object],
    ) -> None:
        try:
            then(self._batch_result(completions, primary.result(), backup.result()))
        except BothStoresFailed:
            pass  # nothing was written, so nothing was claimed (logged by _report)
        except Exception:  # a thread of its own: nobody else would hear of it
            log.exception("finishing a write whose caller was cancelled failed")

    def _batch_result(
        self,
        completions: Sequence[Completion],
        primary: tuple[bool, Any, BaseException | None],
        backup: tuple[bool, Any, BaseException | None],
    ) -> BatchWriteResult:
        result = BatchWriteResult(
            primary[0], backup[0], primary[2], backup[2], primary[1], backup[1]
        )
        keys = sorted({c.run_key for c in completions})
        self._report(f"record {len(completions)} completion(s)", keys, result)
        return result

    def record_completion(self, completion: Completion) -> BatchWriteResult:
        """Write one completion to both stores and say which accepted it."""
        return self.record_completions((completion,))

    def dual_write(
        self,
        operation: str,
        run_keys: Iterable[str],
        fn: Callable[[Any], Any],
        capability: Capability | Callable[[GuardedStore], bool],
    ) -> DualWriteResult:
        """Apply ``fn`` to each store that has ``capability`` (or passes that test); if none
        took it, raise."""
        keys = tuple(run_keys)
        applies = [
            g.can(capability) if isinstance(capability, Capability) else capability(g)
            for g in (self._primary, self._backup)
        ]
        backup_future: Future[tuple[bool, Any, BaseException | None]] | None = None
        if applies[1]:
            backup_future = self._pool.submit(self._attempt, self._backup, fn)
        try:
            primary = self._attempt(self._primary, fn) if applies[0] else (False, None, None)
        finally:
            backup = backup_future.result() if backup_future else (False, None, None)
        result = DualWriteResult(
            primary[0], backup[0], primary[2], backup[2], primary[1], backup[1]
        )
        self._report(operation, keys, result, applies=(applies[0], applies[1]))
        return result

    @staticmethod
    def _attempt(
        guarded: GuardedStore, fn: Callable[[Any], Any]
    ) -> tuple[bool, Any, BaseException | None]:
        try:
            return True, guarded.call(fn), None
        except StoreError as exc:
            return False, None, exc

    def _report(
        self,
        operation: str,
        run_keys: Sequence[str],
        result: DualWriteResult,
        *,
        applies: tuple[bool, bool] = (True, True),
    ) -> None:
        self._counters.add(f"dual_write.{_OUTCOMES[(result.primary_ok, result.backup_ok)]}")
        if not result.acknowledged:
            self._counters.add("both_failed")
            error = BothStoresFailed(operation, result.primary_error, result.backup_error)
            log.critical("%s for run %s: %s", operation, ", ".join(run_keys) or "-", error)
            raise error
        if applies[0] and not result.primary_ok:
            self.replicator.note_missed(StoreRole.PRIMARY, run_keys)
            log.warning(
                "%s: primary store failed, using backup (%s)", operation, result.primary_error
            )
        if applies[1] and not result.backup_ok:
            self.replicator.note_missed(StoreRole.BACKUP, run_keys)
            log.warning("%s: backup store failed (%s)", operation, result.backup_error)

    def record_phase_execution(self, execution: PhaseExecution) -> DualWriteResult:
        """Write a phase-execution record to both stores."""
        return self.dual_write(
            f"record phase execution {execution.phase}",
            (execution.run_key,),
            lambda store: store.record_phase_execution(execution),
            Capability.PHASE_LOG,
        )

    def record_phase_executions(self, executions: Sequence[PhaseExecution]) -> DualWriteResult:
        """Write several phase-execution records to both stores, one write per store."""
        return self.dual_write(
            f"record {len(executions)} phase execution(s)",
            sorted({e.run_key for e in executions}),
            lambda store: record_phase_executions(store, executions),
            Capability.PHASE_LOG,
        )

    # -- claims --------------------------------------------------------------------------

    def claim_trigger(self, trigger: Trigger) -> ClaimOutcome:
        """Claim ``trigger`` (and enqueue it in the outbox) exactly once."""
        return self.arbiter.claim(trigger_claim(trigger))

    def claim_triggers(
        self, triggers: Sequence[Trigger], executions: Sequence[PhaseExecution] | None = None
    ) -> list[ClaimOutcome]:
        """Claim several triggers, each exactly once (see :meth:`ClaimArbiter.claim_triggers`)."""
        return self.arbiter.claim_triggers(triggers, executions)

    def record_timeout(self, report: TimeoutReport) -> ClaimOutcome:
        """Record a timeout once; ``won`` tells whether this caller is the one to report it."""
        return self.arbiter.claim(
            ClaimRequest(
                f"record timeout {report.phase}/{report.run_key}",
                report.run_key,
                lambda store: store.record_timeout(report),
                RecordSet(timeouts=(report,)),
            )
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the background replicator."""
        self.replicator.start()

    def finish(self) -> None:
        """Stop the replicator and finish the writes under way on this tracker's threads
        (retries, a cancelled caller's follow-up); the stores stay open. Idempotent."""
        self.replicator.stop()
        self._pool.shutdown(wait=True)

    def close(self) -> None:
        """:meth:`finish`, then close both stores."""
        self.finish()
        for guarded in (self._primary, self._backup):
            guarded.store.close()
