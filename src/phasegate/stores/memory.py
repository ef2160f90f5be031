"""An in-memory store with every capability: for tests (yours and ours) and for trying
phasegate without a database. ``memory://NAME`` opens one shared by name in the process.

It is the reference implementation of the store protocols: it keeps nothing on disk,
so a completion it acknowledged is lost with the process.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseExecution,
    PhaseRun,
    RecordSet,
    TimeoutReport,
    Trigger,
    answered,
    prefer,
)
from phasegate.stores.base import ALL_CAPABILITIES, Capability

_HistoryKey = tuple[str, str, str, int, str, datetime]


def _history_key(completion: Completion) -> _HistoryKey:
    return (*completion.key, completion.status.value, completion.occurred_at)


def prefer_entry(current: OutboxEntry | None, incoming: OutboxEntry) -> OutboxEntry:
    """Which of two copies of one outbox entry stands: delivered wins, then more attempts."""
    if current is None:
        return incoming
    if incoming.delivered != current.delivered:
        return incoming if incoming.delivered else current
    return current if current.attempts >= incoming.attempts else incoming


class MemoryStore:
    """Every capability, in the process's memory, thread-safe."""

    def __init__(self, *, pipeline: str = "pipeline", name: str = "memory") -> None:
        self.pipeline = pipeline
        self.name = name
        self._lock = threading.Lock()
        self._completions: dict[tuple[str, str, str, int], Completion] = {}
        self._history: dict[_HistoryKey, Completion] = {}
        self._runs: set[str] = set()
        self._outbox: dict[str, OutboxEntry] = {}
        self._executions: dict[tuple[str, str, int], PhaseExecution] = {}
        self._timeouts: dict[tuple[str, str, int], TimeoutReport] = {}
        self.closed = False

    @property
    def capabilities(self) -> frozenset[Capability]:
        """Every capability."""
        return ALL_CAPABILITIES

    # -- completions ---------------------------------------------------------------------

    def record_completions(
        self, completions: Sequence[Completion]
    ) -> Mapping[PhaseRun, frozenset[str]]:
        """Record a batch; answer each phase-run's successes after it (an
        :class:`~phasegate.model.Answered`: its failures and first report too)."""
        with self._lock:
            touched: set[PhaseRun] = set()
            for completion in completions:
                self._completions[completion.key] = prefer(
                    self._completions.get(completion.key), completion
                )
                self._history.setdefault(_history_key(completion), completion)
                self._runs.add(completion.run_key)
                touched.add(completion.phase_run)
            return {run: answered(run, self._completions.values()) for run in touched}

    def completions(self, run_key: str, phase: str | None = None) -> list[Completion]:
        """Current completions of ``run_key``."""
        with self._lock:
            found = [
                c
                for c in self._completions.values()
                if c.run_key == run_key and (phase is None or c.phase == phase)
            ]
        return sorted(found, key=lambda c: c.key)

    def history(self, run_key: str) -> list[Completion]:
        """Every distinct report of ``run_key``, oldest first."""
        with self._lock:
            found = [c for c in self._history.values() if c.run_key == run_key]
        return sorted(found, key=lambda c: (c.occurred_at, c.key))

    def list_runs(self, limit: int = 50) -> list[str]:
        """Most recent run keys, newest first."""
        with self._lock:
            return sorted(self._runs, reverse=True)[:limit]

    # -- claims and the outbox -----------------------------------------------------------

    def claim_trigger(self, trigger: Trigger) -> bool:
        """Compare-and-set on the trigger id."""
        with self._lock:
            if trigger.trigger_id in self._outbox:
                return False
            self._outbox[trigger.trigger_id] = OutboxEntry(trigger, trigger.triggered_at)
            self._runs.add(trigger.run_key)
            return True

    def record_timeout(self, report: TimeoutReport) -> bool:
        """Compare-and-set on the phase-run."""
        key = (report.phase, report.run_key, report.attempt)
        with self._lock:
            if key in self._timeouts:
                return False
            self._timeouts[key] = report
            return True

    def triggers(self, run_key: str) -> list[OutboxEntry]:
        """Claimed triggers of ``run_key``."""
        with self._lock:
            found = [e for e in self._outbox.values() if e.trigger.run_key == run_key]
        return sorted(found, key=lambda e: (e.claimed_at, e.trigger.trigger_id))

    def _pending(self, now: datetime) -> list[OutboxEntry]:
        due = [
            e
            for e in self._outbox.values()
            if not e.delivered
            and (e.next_attempt_at is None or e.next_attempt_at <= now)
            and not e.leased_at(now)
        ]
        return sorted(due, key=lambda e: (e.claimed_at, e.trigger.trigger_id))

    def pending_triggers(self, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Undelivered, due, unleased triggers, oldest first."""
        with self._lock:
            return self._pending(now)[:limit]

    def lease_triggers(
        self, owner: str, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[OutboxEntry]:
        """Lease due triggers to ``owner``."""
        with self._lock:
            leased = []
            for due in self._pending(now)[:limit]:
                entry = due.leased_to(owner, lease_until)
                self._outbox[entry.trigger.trigger_id] = replace(entry, expired_lease_owner=None)
                leased.append(entry)
            return leased

    def mark_delivered(self, trigger_id: str, delivered_at: datetime) -> None:
        """Record a delivery (idempotent)."""
        with self._lock:
            entry = self._outbox.get(trigger_id)
            if entry is not None and not entry.delivered:
                self._outbox[trigger_id] = replace(
                    entry,
                    delivered_at=delivered_at,
                    last_error=None,
                    next_attempt_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                )

    def record_delivery_failure(
        self, trigger_id: str, error: str, next_attempt_at: datetime
    ) -> None:
        """Count a failed attempt."""
        with self._lock:
            entry = self._outbox.get(trigger_id)
            if entry is not None and not entry.delivered:
                self._outbox[trigger_id] = replace(
                    entry,
                    attempts=entry.attempts + 1,
                    last_error=error[:1024],
                    next_attempt_at=next_attempt_at,
                    lease_owner=None,
                    lease_expires_at=None,
                )

    # -- phase log -----------------------------------------------------------------------

    def record_phase_execution(self, execution: PhaseExecution) -> None:
        """Keep the first record of each phase-run."""
        key = (execution.phase, execution.run_key, execution.attempt)
        with self._lock:
            self._executions.setdefault(key, execution)

    def phase_executions(
        self, phase: str | None = None, limit: int = 100, run_key: str | None = None
    ) -> list[PhaseExecution]:
        """Recent executions, newest first."""
        with self._lock:
            found = [
                e
                for e in self._executions.values()
                if (phase is None or e.phase == phase) and (run_key is None or e.run_key == run_key)
            ]
        return sorted(found, key=lambda e: e.triggered_at, reverse=True)[:limit]

    def timeouts(self, run_key: str) -> list[TimeoutReport]:
        """Timeout reports of ``run_key``."""
        with self._lock:
            return [t for t in self._timeouts.values() if t.run_key == run_key]

    # -- replication ---------------------------------------------------------------------

    def export_records(self, first_run_key: str, last_run_key: str) -> RecordSet:
        """Everything for run keys in the range."""

        def within(run_key: str) -> bool:
            return first_run_key <= run_key <= last_run_key

        with self._lock:
            return RecordSet(
                completions=tuple(
                    sorted(
                        (c for c in self._completions.values() if within(c.run_key)),
                        key=lambda c: c.key,
                    )
                ),
                history=tuple(
                    sorted(
                        (c for c in self._history.values() if within(c.run_key)),
                        key=lambda c: (c.occurred_at, c.key),
                    )
                ),
                triggers=tuple(
                    sorted(
                        (e for e in self._outbox.values() if within(e.trigger.run_key)),
                        key=lambda e: (e.claimed_at, e.trigger.trigger_id),
                    )
                ),
                executions=tuple(e for e in self._executions.values() if within(e.run_key)),
                timeouts=tuple(t for t in self._timeouts.values() if within(t.run_key)),
            )

    def import_records(self, records: RecordSet) -> None:
        """Merge ``records`` in: success wins, delivered stays delivered, first claim kept."""
        with self._lock:
            for completion in records.completions:
                self._completions[completion.key] = prefer(
                    self._completions.get(completion.key), completion
                )
                self._runs.add(completion.run_key)
            for completion in records.history:
                self._history.setdefault(_history_key(completion), completion)
                self._runs.add(completion.run_key)
            for entry in records.triggers:
                trigger_id = entry.trigger.trigger_id
                current = self._outbox.get(trigger_id)
                merged = prefer_entry(current, entry)
                if merged is not current:
                    # A lease belongs to the store it was taken on; a copy carries none.
                    merged = replace(merged, lease_owner=None, lease_expires_at=None)
                    self._outbox[trigger_id] = merged
                self._runs.add(entry.trigger.run_key)
            for execution in records.executions:
                key = (execution.phase, execution.run_key, execution.attempt)
                self._executions.setdefault(key, execution)
            for report in records.timeouts:
                self._timeouts.setdefault((report.phase, report.run_key, report.attempt), report)

    # -- lifecycle -----------------------------------------------------------------------

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release."""
        self.closed = True

    def __repr__(self) -> str:
        return f"MemoryStore(name={self.name!r}, pipeline={self.pipeline!r})"


_SHARED: dict[tuple[str, str], MemoryStore] = {}
_SHARED_LOCK = threading.Lock()


def shared_memory_store(key: str, *, pipeline: str, name: str) -> MemoryStore:
    """The process-wide store opened as ``memory://key`` for ``pipeline``."""
    with _SHARED_LOCK:
        store = _SHARED.get((key, pipeline))
        if store is None or store.closed:
            store = _SHARED[(key, pipeline)] = MemoryStore(pipeline=pipeline, name=name)
        return store
