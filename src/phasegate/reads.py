"""Reads across both stores: a record in either one counts.

Each read asks every store that has the capability and whose breaker is not open, and
merges: per completion success wins, else the latest; a delivered copy of a trigger
wins; executions and timeouts are the same in both. Only when no store answers does a
read fail: CRITICAL, alerted as ``both_stores_failed`` (once while it lasts; the next
read that succeeds resolves it), and raised as :class:`~phasegate.errors.BothStoresFailed`.

Claimed triggers are read from every store that keeps them (:func:`keeps_triggers`):
the outbox, and also a ledger (BigQuery) that holds the triggers mirrored to it. A
primary that lost its data, or is out, must not make a triggered phase-run look
untriggered while the backup still knows it was triggered.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from phasegate.errors import BothStoresFailed, StoreError, StoreUnavailable
from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.model import Completion, OutboxEntry, PhaseExecution, TimeoutReport
from phasegate.resilience.breaker import BreakerState
from phasegate.stores.base import (
    Capability,
    completions_of_runs,
    merge_completions,
    triggers_of_runs,
)
from phasegate.stores.guarded import GuardedStore
from phasegate.stores.memory import prefer_entry

log = logging.getLogger(__name__)

T = TypeVar("T")


def keeps_triggers(guarded: GuardedStore) -> bool:
    """Whether ``guarded`` keeps claimed triggers and their delivery events.

    An outbox does; so does a replicable ledger that answers ``triggers`` and records
    ``mark_delivered`` (BigQuery): it holds the claims mirrored to it, never leases.
    """
    if guarded.can(Capability.OUTBOX):
        return True
    store = guarded.store
    return guarded.can(Capability.REPLICATION) and all(
        callable(getattr(store, name, None))
        for name in ("triggers", "mark_delivered", "record_delivery_failure")
    )


def _applies(guarded: GuardedStore, wanted: Capability | Callable[[GuardedStore], bool]) -> bool:
    if isinstance(wanted, Capability):
        return guarded.can(wanted)
    return wanted(guarded)


class MergedReads:
    """Reads that merge the primary's and the backup's answers."""

    def __init__(
        self, primary: GuardedStore, backup: GuardedStore, *, events: EventBus | None = None
    ) -> None:
        self._stores = (primary, backup)
        self.events = events or EventBus()
        self._lock = threading.Lock()
        self._failing = False

    def _read(
        self,
        operation: str,
        capability: Capability | Callable[[GuardedStore], bool],
        fn: Callable[[Any], T],
    ) -> list[T]:
        answers: list[T] = []
        errors: list[BaseException | None] = [None, None]
        for index, guarded in enumerate(self._stores):
            if not _applies(guarded, capability):
                continue
            if guarded.breaker.state is BreakerState.OPEN:
                errors[index] = StoreUnavailable(f"{guarded.role} store skipped: circuit open")
                continue
            try:
                answers.append(fn(guarded.store))
            except StoreError as exc:
                log.warning("%s: %s store read failed: %s", operation, guarded.role, exc)
                errors[index] = exc
        if not answers:
            error = BothStoresFailed(operation, errors[0], errors[1])
            self._both_failed(operation, error)
            raise error
        if self._failing:
            self._recovered(operation)
        return answers

    def _both_failed(self, operation: str, error: BothStoresFailed) -> None:
        with self._lock:
            self._failing = True
        self.events.emit(
            Event(
                EventKind.BOTH_STORES_FAILED,
                Severity.CRITICAL,
                "reads",
                f"{operation} failed: both stores failed ({error}); nothing can be "
                "evaluated or triggered until one answers",
                error=error,
                details={"operation": operation},
            )
        )

    def _recovered(self, operation: str) -> None:
        with self._lock:
            recovered, self._failing = self._failing, False
        if recovered:
            self.events.emit(
                Event(
                    EventKind.STORES_RECOVERED,
                    Severity.RESOLVED,
                    "reads",
                    f"the stores answer reads again ({operation})",
                )
            )

    def completions(self, run_key: str, phase: str | None = None) -> list[Completion]:
        """Current completions of ``run_key`` merged from both stores (success wins)."""
        return merge_completions(
            *self._read(
                "read completions",
                Capability.COMPLETIONS,
                lambda s: s.completions(run_key, phase),
            )
        )

    def completions_of_runs(self, run_keys: Sequence[str]) -> dict[str, list[Completion]]:
        """:meth:`completions` of several run keys, one read per store."""
        groups = self._read(
            "read completions",
            Capability.COMPLETIONS,
            lambda s: completions_of_runs(s, run_keys),
        )
        return {key: merge_completions(*(g.get(key, []) for g in groups)) for key in run_keys}

    def history(self, run_key: str) -> list[Completion]:
        """Every distinct report of ``run_key`` in either store, oldest first."""
        seen: dict[tuple[Any, ...], Completion] = {}
        for group in self._read(
            "read history", Capability.COMPLETIONS, lambda s: s.history(run_key)
        ):
            for c in group:
                seen.setdefault((*c.key, c.status, c.occurred_at), c)
        return sorted(seen.values(), key=lambda c: (c.occurred_at, c.key))

    def list_runs(self, limit: int = 50) -> list[str]:
        """Most recent run keys in either store, newest first."""
        keys: set[str] = set()
        for group in self._read("list runs", Capability.COMPLETIONS, lambda s: s.list_runs(limit)):
            keys.update(group)
        return sorted(keys, reverse=True)[:limit]

    def triggers(self, run_key: str) -> list[OutboxEntry]:
        """Claimed triggers of ``run_key`` from either store; a delivered copy wins."""
        return _merge_entries(
            self._read("read triggers", keeps_triggers, lambda s: s.triggers(run_key))
        )

    def triggers_of_runs(self, run_keys: Sequence[str]) -> dict[str, list[OutboxEntry]]:
        """:meth:`triggers` of several run keys, one read per store."""
        groups = self._read(
            "read triggers", keeps_triggers, lambda s: triggers_of_runs(s, run_keys)
        )
        return {key: _merge_entries([g.get(key, []) for g in groups]) for key in run_keys}

    def pending_triggers(self, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Undelivered, due triggers in either store, minus those either store saw delivered."""
        answers = self._read(
            "read pending triggers", Capability.OUTBOX, lambda s: s.pending_triggers(now, limit)
        )
        candidates: dict[str, OutboxEntry] = {}
        seen_in: Counter[str] = Counter()
        for group in answers:
            for entry in group:
                trigger_id = entry.trigger.trigger_id
                candidates[trigger_id] = prefer_entry(candidates.get(trigger_id), entry)
                seen_in[trigger_id] += 1
        if len(answers) == 2:
            # Pending in one store only: the other may have it delivered (or leased).
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
        merged: dict[tuple[str, str, int], PhaseExecution] = {}
        for group in self._read(
            "read phase executions",
            Capability.PHASE_LOG,
            lambda s: s.phase_executions(phase, limit, run_key),
        ):
            for execution in group:
                merged.setdefault(
                    (execution.phase, execution.run_key, execution.attempt), execution
                )
        return sorted(merged.values(), key=lambda e: e.triggered_at, reverse=True)[:limit]

    def timeouts(self, run_key: str) -> list[TimeoutReport]:
        """Timeout reports of ``run_key`` from either store."""
        merged: dict[tuple[str, int], TimeoutReport] = {}
        for group in self._read(
            "read timeouts", Capability.PHASE_LOG, lambda s: s.timeouts(run_key)
        ):
            for report in group:
                merged.setdefault((report.phase, report.attempt), report)
        return list(merged.values())


def _merge_entries(groups: Iterable[Iterable[OutboxEntry]]) -> list[OutboxEntry]:
    merged: dict[str, OutboxEntry] = {}
    for group in groups:
        for entry in group:
            trigger_id = entry.trigger.trigger_id
            merged[trigger_id] = prefer_entry(merged.get(trigger_id), entry)
    return sorted(merged.values(), key=lambda e: (e.claimed_at, e.trigger.trigger_id))


class ReadsBothStores:
    """The reading half of :class:`~phasegate.tracker.CompletionTracker`: each read asks
    both stores and merges the answers (see :class:`MergedReads`)."""

    reads: MergedReads

    def completions(self, run_key: str, phase: str | None = None) -> list[Completion]:
        """Current completions of ``run_key`` merged from both stores (success wins)."""
        return self.reads.completions(run_key, phase)

    def completions_of_runs(self, run_keys: Sequence[str]) -> dict[str, list[Completion]]:
        """:meth:`completions` of several run keys, one read per store."""
        return self.reads.completions_of_runs(run_keys)

    def triggers_of_runs(self, run_keys: Sequence[str]) -> dict[str, list[OutboxEntry]]:
        """:meth:`triggers` of several run keys, one read per store."""
        return self.reads.triggers_of_runs(run_keys)

    def history(self, run_key: str) -> list[Completion]:
        """Every distinct report of ``run_key`` in either store, oldest first."""
        return self.reads.history(run_key)

    def list_runs(self, limit: int = 50) -> list[str]:
        """Most recent run keys in either store, newest first."""
        return self.reads.list_runs(limit)

    def triggers(self, run_key: str) -> list[OutboxEntry]:
        """Claimed triggers of ``run_key`` from either store; a delivered copy wins."""
        return self.reads.triggers(run_key)

    def pending_triggers(self, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Undelivered, due triggers in either store, minus those either saw delivered."""
        return self.reads.pending_triggers(now, limit)

    def phase_executions(
        self, phase: str | None = None, limit: int = 100, run_key: str | None = None
    ) -> list[PhaseExecution]:
        """Recent phase executions in either store, newest first."""
        return self.reads.phase_executions(phase, limit, run_key)

    def timeouts(self, run_key: str) -> list[TimeoutReport]:
        """Timeout reports of ``run_key`` from either store."""
        return self.reads.timeouts(run_key)
