"""The one small protocol every store implements, and helpers shared by backends."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseExecution,
    RecordSet,
    TimeoutReport,
    Trigger,
)


@runtime_checkable
class CompletionStore(Protocol):
    """Durable home of completions, trigger claims, the outbox and phase history.

    A store is scoped to one pipeline. Transient failures raise
    ``TransientStoreError``; anything else a store cannot do raises ``StoreError``.
    """

    name: str

    def record_completion(self, completion: Completion) -> frozenset[str]:
        """Upsert ``completion`` (idempotent, ``success`` sticky, every report kept in
        history); return the processors that have succeeded in that phase of that run."""
        ...

    def completions(self, run_key: str, phase: str | None = None) -> list[Completion]:
        """The current completion of each processor for ``run_key`` (one phase, or all)."""
        ...

    def history(self, run_key: str) -> list[Completion]:
        """Every distinct report received for ``run_key``, oldest first."""
        ...

    def list_runs(self, limit: int = 50) -> list[str]:
        """The most recent run keys, newest (greatest) first."""
        ...

    def claim_trigger(self, trigger: Trigger) -> bool:
        """Atomically claim ``trigger`` and put it in the outbox; ``True`` for the one winner."""
        ...

    def triggers(self, run_key: str) -> list[OutboxEntry]:
        """Every claimed trigger of ``run_key``."""
        ...

    def pending_triggers(self, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Undelivered triggers whose next attempt is due at ``now``, oldest first."""
        ...

    def mark_delivered(self, trigger_id: str, delivered_at: datetime) -> None:
        """Record that a transport accepted ``trigger_id`` (idempotent)."""
        ...

    def record_delivery_failure(
        self, trigger_id: str, error: str, next_attempt_at: datetime
    ) -> None:
        """Count a failed delivery attempt and when to try again."""
        ...

    def record_phase_execution(self, execution: PhaseExecution) -> None:
        """Keep how a phase went (idempotent per phase and run key)."""
        ...

    def phase_executions(
        self, phase: str | None = None, limit: int = 100, run_key: str | None = None
    ) -> list[PhaseExecution]:
        """Recent phase executions (of one phase, of one run), newest first."""
        ...

    def record_timeout(self, report: TimeoutReport) -> bool:
        """Record that a phase timed out; ``True`` only the first time."""
        ...

    def timeouts(self, run_key: str) -> list[TimeoutReport]:
        """The timeout reports of ``run_key``."""
        ...

    def export_records(self, first_run_key: str, last_run_key: str) -> RecordSet:
        """Everything stored for run keys in ``[first_run_key, last_run_key]``."""
        ...

    def import_records(self, records: RecordSet) -> int:
        """Merge ``records`` in idempotently (success wins); returns how many rows changed."""
        ...

    def ping(self) -> None:
        """A cheap round trip that raises when the store cannot be used."""
        ...

    def close(self) -> None:
        """Release connections and background threads."""
        ...


def merge_completions(*groups: Sequence[Completion]) -> list[Completion]:
    """Merge completions from several stores: per identity, success wins, else the latest."""
    from phasegate.model import prefer  # noqa: PLC0415 - keeps base.py import-light

    merged: dict[tuple[str, str, str], Completion] = {}
    for group in groups:
        for completion in group:
            merged[completion.key] = prefer(merged.get(completion.key), completion)
    return sorted(merged.values(), key=lambda c: c.key)
