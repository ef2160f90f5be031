"""Dual-write: every record goes to a primary and a backup store, each with its own
retry policy and circuit breaker; reads merge both so a record in either one counts.

A store that missed writes while it was failing is caught up from the other store
(per run key) before its breaker closes again.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import tenacity

from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.errors import BothStoresFailed, StoreError, StoreUnavailable, TransientStoreError
from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseExecution,
    TimeoutReport,
    Trigger,
)
from phasegate.resilience.breaker import BreakerState, CircuitBreaker
from phasegate.resilience.retry import (
    BACKUP_WRITE_POLICY,
    PRIMARY_WRITE_POLICY,
    RetryPolicy,
    call_with_retry,
)
from phasegate.stores.base import CompletionStore, merge_completions

log = logging.getLogger(__name__)

T = TypeVar("T")
_SINGLE_ATTEMPT = RetryPolicy(attempts=1, base=0.0, max_delay=0.0)


class StoreRole(StrEnum):
    """Which of the two stores."""

    PRIMARY = "primary"
    BACKUP = "backup"


@dataclass(frozen=True, slots=True)
class DualWriteResult:
    """Which stores accepted a write; unpacks as ``(primary_ok, backup_ok)``."""

    primary_ok: bool
    backup_ok: bool
    primary_error: BaseException | None = None
    backup_error: BaseException | None = None
    primary_value: Any = None
    backup_value: Any = None

    def __iter__(self) -> Any:
        return iter((self.primary_ok, self.backup_ok))

    @property
    def acknowledged(self) -> bool:
        """At least one store holds the record durably."""
        return self.primary_ok or self.backup_ok

    def succeeded_after(self) -> frozenset[str]:
        """After ``record_completion``: the processors succeeded in either store."""
        merged: set[str] = set()
        for ok, value in (
            (self.primary_ok, self.primary_value),
            (self.backup_ok, self.backup_value),
        ):
            if ok and value:
                merged.update(value)
        return frozenset(merged)


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """The result of claiming a trigger: whether this caller won, and on which store.

    ``claimed_on`` is ``None`` when the claim was deferred (see :attr:`deferred`).
    """

    won: bool
    claimed_on: StoreRole | None
    write: DualWriteResult

    @property
    def deferred(self) -> bool:
        """Neither store could decide the claim safely; a later sweep will."""
        return self.claimed_on is None


class _Guarded:
    """One store with its breaker, retry policy and the run keys it missed."""

    def __init__(
        self, store: CompletionStore, role: StoreRole, policy: RetryPolicy, breaker: CircuitBreaker
    ) -> None:
        self.store = store
        self.role = role
        self.policy = policy
        self.breaker = breaker
        self.missed: set[str] = set()
        self.lock = threading.Lock()


class CompletionTracker:
    """Dual-writes completions and every other record to a primary and a backup store."""

    def __init__(
        self,
        primary: CompletionStore,
        backup: CompletionStore,
        *,
        primary_policy: RetryPolicy = PRIMARY_WRITE_POLICY,
        backup_policy: RetryPolicy = BACKUP_WRITE_POLICY,
        breaker_reset: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._primary = _Guarded(
            primary,
            StoreRole.PRIMARY,
            primary_policy,
            CircuitBreaker("primary_store", reset_timeout=breaker_reset, clock=clock),
        )
        self._backup = _Guarded(
            backup,
            StoreRole.BACKUP,
            backup_policy,
            CircuitBreaker("backup_store", reset_timeout=breaker_reset, clock=clock),
        )
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="phasegate-backup")
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()

    # -- introspection -------------------------------------------------------------------

    @property
    def primary(self) -> CompletionStore:
        """The primary store."""
        return self._primary.store

    @property
    def backup(self) -> CompletionStore:
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
    def clock(self) -> Clock:
        """The clock this tracker (and whatever is built on it) uses."""
        return self._clock

    def counts(self) -> dict[str, int]:
        """Counters such as ``retries.primary``, ``writes.backup.failed``, ``both_failed``."""
        with self._counts_lock:
            return dict(self._counts)

    def missed_run_keys(self, role: StoreRole) -> frozenset[str]:
        """Run keys that ``role`` missed writes for and has not been caught up on yet."""
        guarded = self._guarded(role)
        with guarded.lock:
            return frozenset(guarded.missed)

    def _guarded(self, role: StoreRole) -> _Guarded:
        return self._primary if role is StoreRole.PRIMARY else self._backup

    def _count(self, key: str, amount: int = 1) -> None:
        with self._counts_lock:
            self._counts[key] += amount

    # -- writing -------------------------------------------------------------------------

    def _attempt(
        self,
        guarded: _Guarded,
        fn: Callable[[CompletionStore], T],
        *,
        current_for: str | None = None,
    ) -> tuple[bool, T | None, BaseException | None]:
        """One retried, breaker-guarded operation on one store.

        A store that missed writes is caught up from the other store first. With
        ``current_for`` the operation is refused while the store still misses that run
        key: a compare-and-set on a store that lacks records would decide wrongly.
        """
        permit = guarded.breaker.try_acquire()
        if permit is None:
            self._count(f"writes.{guarded.role}.skipped")
            retry_in = guarded.breaker.retry_in()
            return (
                False,
                None,
                StoreUnavailable(
                    f"{guarded.role} store skipped: circuit open (next trial in {retry_in:.0f}s)"
                ),
            )

        def on_retry(state: tenacity.RetryCallState) -> None:
            self._count(f"retries.{guarded.role}")
            outcome = state.outcome
            log.info(
                "%s store write failed (attempt %d, %s); retrying in %.2fs",
                guarded.role,
                state.attempt_number,
                outcome.exception() if outcome is not None else None,
                state.upcoming_sleep,
            )

        # A half-open breaker gets exactly one trial call, not a retried one.
        policy = _SINGLE_ATTEMPT if permit.trial else guarded.policy
        try:
            if guarded.missed:
                self._catch_up(guarded)
            if current_for is not None and current_for in self.missed_run_keys(guarded.role):
                guarded.breaker.release(permit)
                return (
                    False,
                    None,
                    StoreUnavailable(
                        f"{guarded.role} store still misses records of run {current_for}"
                    ),
                )
            value = call_with_retry(
                lambda: fn(guarded.store),
                policy,
                sleep=self._clock.sleep,
                rng=self._rng,
                on_retry=on_retry,
            )
        except TransientStoreError as exc:
            guarded.breaker.record_failure(permit)
            self._count(f"writes.{guarded.role}.failed")
            return False, None, exc
        except StoreError as exc:
            guarded.breaker.release(permit)
            self._count(f"writes.{guarded.role}.failed")
            return False, None, exc
        except BaseException:
            guarded.breaker.release(permit)
            raise
        self._count(f"writes.{guarded.role}.ok")
        guarded.breaker.record_success(permit)
        return True, value, None

    def _catch_up(self, guarded: _Guarded) -> None:
        """Copy what ``guarded`` missed from the other store, run key by run key.

        Keys that could not be copied stay missed. An error of ``guarded`` itself
        propagates (it is that store's failure); the other store failing does not.
        """
        other = self._backup if guarded is self._primary else self._primary
        with guarded.lock:
            pending, guarded.missed = guarded.missed, set()
        done: set[str] = set()
        try:
            for run_key in sorted(pending):
                try:
                    records = other.store.export_records(run_key, run_key)
                except StoreError as exc:
                    log.warning(
                        "cannot catch up the %s store yet: reading the %s store failed: %s",
                        guarded.role,
                        other.role,
                        exc,
                    )
                    return
                guarded.store.import_records(records)
                done.add(run_key)
        finally:
            with guarded.lock:
                guarded.missed.update(pending - done)
            if done:
                self._count(f"replayed.{guarded.role}", len(done))
                log.info("caught up the %s store on %d run key(s)", guarded.role, len(done))

    def resync(self) -> dict[StoreRole, frozenset[str]]:
        """Catch up any store that missed writes, breaker or not; returns what is still missed."""
        for guarded in (self._primary, self._backup):
            if guarded.missed:
                try:
                    self._catch_up(guarded)
                except StoreError as exc:
                    log.warning("catching up the %s store failed: %s", guarded.role, exc)
        return {role: self.missed_run_keys(role) for role in StoreRole}

    def _note_missed(self, guarded: _Guarded, run_keys: Iterable[str]) -> None:
        with guarded.lock:
            guarded.missed.update(run_keys)

    def dual_write(
        self, operation: str, run_keys: Iterable[str], fn: Callable[[CompletionStore], Any]
    ) -> DualWriteResult:
        """Apply ``fn`` to both stores; if neither took it, log CRITICAL and raise."""
        keys = tuple(run_keys)
        # The two stores fail apart, so they are written side by side: a slow or retrying
        # backup does not hold the primary's write up, and the caller waits for the slower.
        backup_future = self._pool.submit(self._attempt, self._backup, fn)
        try:
            primary_ok, primary_value, primary_error = self._attempt(self._primary, fn)
        finally:
            # A programming error escapes from the primary; the backup call is still awaited.
            backup_ok, backup_value, backup_error = backup_future.result()
        result = DualWriteResult(
            primary_ok, backup_ok, primary_error, backup_error, primary_value, backup_value
        )
        self._report(operation, keys, result)
        return result

    def _report(self, operation: str, run_keys: tuple[str, ...], result: DualWriteResult) -> None:
        outcome = {
            (True, True): "both",
            (True, False): "primary_only",
            (False, True): "backup_only",
            (False, False): "none",
        }[(result.primary_ok, result.backup_ok)]
        self._count(f"dual_write.{outcome}")
        if result.primary_ok and result.backup_ok:
            return
        if not result.acknowledged:
            self._count("both_failed")
            error = BothStoresFailed(operation, result.primary_error, result.backup_error)
            log.critical("%s for run %s: %s", operation, ", ".join(run_keys) or "-", error)
            raise error
        if not result.primary_ok:
            self._note_missed(self._primary, run_keys)
            log.warning(
                "%s: primary store failed, using backup (%s)", operation, result.primary_error
            )
        else:
            self._note_missed(self._backup, run_keys)
            log.warning("%s: backup store failed (%s)", operation, result.backup_error)

    def record_completion(self, completion: Completion) -> DualWriteResult:
        """Write ``completion`` to both stores and say which accepted it.

        :meth:`succeeded_after` of the result is the merged view of the phase's
        successes: a processor that succeeded in either store counts.
        """
        return self.dual_write(
            f"record completion {completion.phase}/{completion.processor}",
            (completion.run_key,),
            lambda store: store.record_completion(completion),
        )

    def record_phase_execution(self, execution: PhaseExecution) -> DualWriteResult:
        """Write a phase-execution record to both stores."""
        return self.dual_write(
            f"record phase execution {execution.phase}",
            (execution.run_key,),
            lambda store: store.record_phase_execution(execution),
        )

    def mark_delivered(self, entry: OutboxEntry, delivered_at: datetime) -> DualWriteResult:
        """Record in both stores that a trigger was delivered."""
        trigger = entry.trigger
        return self.dual_write(
            f"mark trigger {trigger.trigger_id} delivered",
            (trigger.run_key,),
            lambda store: store.mark_delivered(trigger.trigger_id, delivered_at),
        )

    def record_delivery_failure(
        self, entry: OutboxEntry, error: str, next_attempt_at: datetime
    ) -> DualWriteResult:
        """Record in both stores that a delivery attempt failed."""
        trigger = entry.trigger
        return self.dual_write(
            f"record delivery failure of {trigger.trigger_id}",
            (trigger.run_key,),
            lambda store: store.record_delivery_failure(trigger.trigger_id, error, next_attempt_at),
        )

    def _claim(
        self, what: str, run_key: str, fn: Callable[[CompletionStore], bool]
    ) -> ClaimOutcome:
        """Compare-and-set on the primary; on the backup only while the primary is out."""
        primary_ok, won, primary_error = self._attempt(self._primary, fn, current_for=run_key)
        if primary_ok and not won:
            # Someone else holds the claim; only the winner mirrors it to the backup.
            return ClaimOutcome(False, StoreRole.PRIMARY, DualWriteResult(True, True))
        if primary_ok:
            backup_ok, backup_won, backup_error = self._attempt(self._backup, fn)
            write = DualWriteResult(True, backup_ok, None, backup_error)
            if not backup_ok:
                self._note_missed(self._backup, (run_key,))
                log.warning("%s: backup store failed (%s)", what, backup_error)
            elif won and not backup_won:
                # The backup already held this claim: made there during a primary outage
                # and not yet replayed, possibly by another replica. Reconciliation checks it.
                self._count("claims.already_on_backup")
                log.warning("%s: the backup store already held this claim", what)
            return ClaimOutcome(bool(won), StoreRole.PRIMARY, write)
        backup_ok, won, backup_error = self._attempt(self._backup, fn, current_for=run_key)
        write = DualWriteResult(False, backup_ok, primary_error, backup_error)
        if not backup_ok and run_key in self.missed_run_keys(StoreRole.BACKUP):
            # The backup cannot decide alone: it lacks records the primary has.
            self._count("claims.deferred")
            log.warning(
                "%s: deferred: the primary is out and the backup misses records of run %s",
                what,
                run_key,
            )
            return ClaimOutcome(False, None, write)
        self._report(what, (run_key,), write)
        self._count("claims.on_backup")
        log.warning("%s: claimed on the backup store while the primary is out", what)
        return ClaimOutcome(bool(won), StoreRole.BACKUP, write)

    def claim_trigger(self, trigger: Trigger) -> ClaimOutcome:
        """Claim ``trigger`` (and enqueue it in the outbox) exactly once."""
        return self._claim(
            f"claim trigger {trigger.phase}/{trigger.run_key}",
            trigger.run_key,
            lambda store: store.claim_trigger(trigger),
        )

    def record_timeout(self, report: TimeoutReport) -> ClaimOutcome:
        """Record a timeout once; ``won`` tells whether this caller is the one to report it."""
        return self._claim(
            f"record timeout {report.phase}/{report.run_key}",
            report.run_key,
            lambda store: store.record_timeout(report),
        )

    # -- reading -------------------------------------------------------------------------

    def _read(self, operation: str, fn: Callable[[CompletionStore], T]) -> list[T]:
        answers: list[T] = []
        errors: list[BaseException | None] = []
        for guarded in (self._primary, self._backup):
            if guarded.breaker.state is BreakerState.OPEN:
                errors.append(StoreUnavailable(f"{guarded.role} store skipped: circuit open"))
                continue
            try:
                answers.append(fn(guarded.store))
                errors.append(None)
            except StoreError as exc:
                log.warning("%s: %s store read failed: %s", operation, guarded.role, exc)
                errors.append(exc)
        if not answers:
            error = BothStoresFailed(operation, errors[0], errors[1])
            log.critical("%s", error)
            raise error
        return answers

    def completions(self, run_key: str, phase: str | None = None) -> list[Completion]:
        """Current completions of ``run_key`` merged from both stores (success wins)."""
        return merge_completions(
            *self._read("read completions", lambda s: s.completions(run_key, phase))
        )

    def history(self, run_key: str) -> list[Completion]:
        """Every distinct report of ``run_key`` in either store, oldest first."""
        seen: dict[tuple[Any, ...], Completion] = {}
        for group in self._read("read history", lambda s: s.history(run_key)):
            for c in group:
                seen.setdefault((*c.key, c.status, c.occurred_at), c)
        return sorted(seen.values(), key=lambda c: (c.occurred_at, c.key))

    def list_runs(self, limit: int = 50) -> list[str]:
        """Most recent run keys in either store, newest first."""
        keys: set[str] = set()
        for group in self._read("list runs", lambda s: s.list_runs(limit)):
            keys.update(group)
        return sorted(keys, reverse=True)[:limit]

    def triggers(self, run_key: str) -> list[OutboxEntry]:
        """Claimed triggers of ``run_key`` from either store; a delivered copy wins."""
        merged: dict[str, OutboxEntry] = {}
        for group in self._read("read triggers", lambda s: s.triggers(run_key)):
            for entry in group:
                merged[entry.trigger.trigger_id] = _prefer_entry(
                    merged.get(entry.trigger.trigger_id), entry
                )
        return sorted(merged.values(), key=lambda e: e.claimed_at)

    def pending_triggers(self, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Undelivered, due triggers in either store, minus those either store saw delivered."""
        answers = self._read("read pending triggers", lambda s: s.pending_triggers(now, limit))
        candidates: dict[str, OutboxEntry] = {}
        seen_in: Counter[str] = Counter()
        for group in answers:
            for entry in group:
                candidates[entry.trigger.trigger_id] = _prefer_entry(
                    candidates.get(entry.trigger.trigger_id), entry
                )
                seen_in[entry.trigger.trigger_id] += 1
        if len(answers) == 2:
            for trigger_id, count in list(seen_in.items()):
                if count == 1:
                    run_key = candidates[trigger_id].trigger.run_key
                    if any(
                        e.trigger.trigger_id == trigger_id and e.delivered
                        for e in self.triggers(run_key)
                    ):
                        del candidates[trigger_id]
        return sorted(candidates.values(), key=lambda e: e.claimed_at)[:limit]

    def phase_executions(
        self, phase: str | None = None, limit: int = 100, run_key: str | None = None
    ) -> list[PhaseExecution]:
        """Recent phase executions in either store, newest first."""
        merged: dict[tuple[str, str], PhaseExecution] = {}
        for group in self._read(
            "read phase executions", lambda s: s.phase_executions(phase, limit, run_key)
        ):
            for execution in group:
                merged.setdefault((execution.phase, execution.run_key), execution)
        return sorted(merged.values(), key=lambda e: e.triggered_at, reverse=True)[:limit]

    def timeouts(self, run_key: str) -> list[TimeoutReport]:
        """Timeout reports of ``run_key`` from either store."""
        merged: dict[str, TimeoutReport] = {}
        for group in self._read("read timeouts", lambda s: s.timeouts(run_key)):
            for report in group:
                merged.setdefault(report.phase, report)
        return list(merged.values())

    def close(self) -> None:
        """Close both stores."""
        self._pool.shutdown(wait=True)
        for guarded in (self._primary, self._backup):
            guarded.store.close()


def _prefer_entry(current: OutboxEntry | None, incoming: OutboxEntry) -> OutboxEntry:
    if current is None:
        return incoming
    if incoming.delivered and not current.delivered:
        return incoming
    if current.delivered and not incoming.delivered:
        return current
    return current if current.attempts >= incoming.attempts else incoming
