"""What a store can do, as small protocols, and helpers shared by backends.

A backend implements :class:`Store` (a name, ``ping``, ``close``, the set of
:class:`Capability` it declares) and the protocol of each capability it declares:

=================  ====================  ============================================
capability         protocol              what it holds
=================  ====================  ============================================
``completions``    :class:`CompletionLog`   current completions, history, run keys
``claims``         :class:`ClaimRegistry`   compare-and-set claims of triggers and
                                            timeouts (a claimed trigger enters the outbox)
``outbox``         :class:`Outbox`          claimed triggers and their delivery state,
                                            leased to one dispatcher at a time
``phase_log``      :class:`PhaseLog`        phase executions and timeout reports
``replication``    :class:`Replicable`      export and idempotent import of records
=================  ====================  ============================================

Every method takes and returns phasegate's own records. Transient failures raise
:class:`~phasegate.errors.TransientStoreError`; anything else a store cannot do raises
:class:`~phasegate.errors.StoreError`. Each backend maps its driver's errors into
these in one place. A store is scoped to one pipeline.

An append-only backend (BigQuery) declares everything but ``claims``: it records
claims made elsewhere through :meth:`Replicable.import_records` and never decides one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from phasegate.errors import StoreError
from phasegate.model import (
    Answered,
    Completion,
    OutboxEntry,
    PhaseExecution,
    PhaseRun,
    RecordSet,
    TimeoutReport,
    Trigger,
    prefer,
)


class Capability(StrEnum):
    """One part of what a store can do; a backend declares the ones it implements."""

    COMPLETIONS = "completions"
    CLAIMS = "claims"
    OUTBOX = "outbox"
    PHASE_LOG = "phase_log"
    REPLICATION = "replication"


ALL_CAPABILITIES = frozenset(Capability)


@runtime_checkable
class Store(Protocol):
    """What every backend is: named, pingable, closable, with declared capabilities."""

    name: str

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The capabilities this store implements."""
        ...

    def ping(self) -> None:
        """A cheap round trip that raises when the store cannot be used."""
        ...

    def close(self) -> None:
        """Release connections and background threads (idempotent)."""
        ...


@runtime_checkable
class CompletionLog(Store, Protocol):
    """Completions: current state per identity, every report in history, run keys."""

    def record_completions(
        self, completions: Sequence[Completion]
    ) -> Mapping[PhaseRun, frozenset[str]]:
        """Record a batch durably before returning, and answer each phase-run it touched.

        Idempotent per identity; ``success`` is sticky; every distinct report is kept in
        history. The answer maps each :class:`PhaseRun` in the batch to the processors
        that have succeeded in it, this batch included, read after the write (in the same
        transaction where the backend has one). A store that can answers each with an
        :class:`~phasegate.model.Answered` (that set, with the processors whose report
        stands as failed and the earliest report's time), which spares a claim reading
        the phase-run back. The batch is all-or-nothing: on an error no caller may treat
        any of it as recorded.
        """
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


@runtime_checkable
class CompletionSubmitter(CompletionLog, Protocol):
    """A completion log with its own writer: batches are queued, not run on the caller.

    The hot path submits to both stores at once and waits on both futures, so the two
    writes overlap with no thread hand-off of the caller's own. The future resolves to
    what :meth:`CompletionLog.record_completions` returns, only once the batch is
    durable, or raises what it would have raised.
    """

    def submit_completions(
        self, completions: Sequence[Completion]
    ) -> Future[Mapping[PhaseRun, frozenset[str]]]:
        """Queue a batch for this store's writer; the future resolves once it is durable."""
        ...


class ClaimsInTransaction(Protocol):
    """Triggers read and claimed inside the transaction of a batch of completions (see
    :data:`ClaimsAfter`).

    ``decided`` holds, for the whole transaction, each phase-run an earlier call in it
    decided, with the id of its trigger (claimed then, or found already claimed): the
    reports of one run often share a batch, and all of them see it complete."""

    decided: dict[PhaseRun, str]

    def triggers_of_runs(self, run_keys: Sequence[str]) -> dict[str, list[OutboxEntry]]:
        """The outbox entries of each run key, as the transaction sees them."""
        ...

    def claim_triggers(
        self, triggers: Sequence[Trigger], executions: Sequence[PhaseExecution]
    ) -> list[bool]:
        """Claim each trigger by id, keeping each winner's execution record; won or not."""
        ...


ClaimsAfter = Callable[[ClaimsInTransaction, dict[PhaseRun, Answered]], object]
"""Work a store that claims inside its writer's transactions (``claims_ride_writer``)
runs in a batch's transaction once its completions are written and answered: what the
batch completed is claimed in that same commit (see ``SqlStore.submit_completions``)."""


@runtime_checkable
class ClaimRegistry(Store, Protocol):
    """Compare-and-set: of all callers claiming the same thing, exactly one wins."""

    def claim_trigger(self, trigger: Trigger) -> bool:
        """Claim ``trigger`` by its id and put it in the outbox atomically; ``True`` for the
        one winner. A store with a claim registry also has the outbox."""
        ...

    def record_timeout(self, report: TimeoutReport) -> bool:
        """Record that a phase-run timed out; ``True`` only for the first caller."""
        ...


@runtime_checkable
class Outbox(Store, Protocol):
    """Claimed triggers and their delivery, leased to one dispatcher at a time."""

    def triggers(self, run_key: str) -> list[OutboxEntry]:
        """Every claimed trigger of ``run_key``, oldest first."""
        ...

    def pending_triggers(self, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Undelivered triggers due at ``now`` (next attempt reached, no live lease),
        oldest first."""
        ...

    def lease_triggers(
        self, owner: str, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[OutboxEntry]:
        """Lease up to ``limit`` pending triggers to ``owner`` until ``lease_until``.

        A trigger leased to another owner whose lease has not expired at ``now`` is never
        returned, so concurrent dispatchers never hold the same trigger. Returns the
        leased entries (with the lease set), oldest first.
        """
        ...

    def mark_delivered(self, trigger_id: str, delivered_at: datetime) -> None:
        """Record that a transport accepted ``trigger_id`` (idempotent); drops the lease."""
        ...

    def record_delivery_failure(
        self, trigger_id: str, error: str, next_attempt_at: datetime
    ) -> None:
        """Count a failed delivery attempt and when to try again; drops the lease."""
        ...


@runtime_checkable
class PhaseLog(Store, Protocol):
    """How phases went: executions (for durations) and timeout reports."""

    def record_phase_execution(self, execution: PhaseExecution) -> None:
        """Keep how a phase-run went (idempotent per phase, run key and attempt)."""
        ...

    def phase_executions(
        self, phase: str | None = None, limit: int = 100, run_key: str | None = None
    ) -> list[PhaseExecution]:
        """Recent phase executions (of one phase, of one run), newest first."""
        ...

    def timeouts(self, run_key: str) -> list[TimeoutReport]:
        """The timeout reports of ``run_key``."""
        ...


@runtime_checkable
class Replicable(Store, Protocol):
    """Export and idempotent import: how two stores are reconciled and caught up."""

    def export_records(self, first_run_key: str, last_run_key: str) -> RecordSet:
        """Everything stored for run keys in ``[first_run_key, last_run_key]``."""
        ...

    def import_records(self, records: RecordSet) -> None:
        """Merge ``records`` in idempotently: success wins, a delivered trigger stays
        delivered, a claim or timeout already held is kept as it is."""
        ...


def export_runs(store: Replicable, run_keys: Sequence[str]) -> RecordSet:
    """Everything ``store`` holds for ``run_keys``: in one go from a store with an
    ``export_runs`` method (SQL), else one export per run key (a range could span far
    more than the keys asked for)."""
    export = getattr(store, "export_runs", None)
    if export is not None:
        found: RecordSet = export(run_keys)
        return found
    return merged_records(store.export_records(key, key) for key in sorted(set(run_keys)))


def merged_records(sets: Iterable[RecordSet]) -> RecordSet:
    """One record set holding each of ``sets`` (of distinct run keys)."""
    parts = list(sets)
    return RecordSet(
        completions=tuple(c for part in parts for c in part.completions),
        history=tuple(c for part in parts for c in part.history),
        triggers=tuple(e for part in parts for e in part.triggers),
        executions=tuple(e for part in parts for e in part.executions),
        timeouts=tuple(t for part in parts for t in part.timeouts),
    )


@runtime_checkable
class FullStore(CompletionLog, ClaimRegistry, Outbox, PhaseLog, Replicable, Protocol):
    """A store with every capability (SQL, in-memory, Firestore)."""


def has_capability(store: Store, capability: Capability) -> bool:
    """Whether ``store`` declares ``capability``."""
    return capability in store.capabilities


def require_capabilities(store: Store, needed: Iterable[Capability], role: str) -> None:
    """Raise a StoreError naming what ``store`` lacks to serve as ``role``."""
    missing = sorted(set(needed) - set(store.capabilities))
    if missing:
        raise StoreError(
            f"the {role} store {store.name!r} lacks the capabilities {', '.join(missing)}"
        )


def merge_completions(*groups: Sequence[Completion]) -> list[Completion]:
    """Merge completions from several stores: per identity, success wins, else the latest."""
    merged: dict[tuple[str, str, str, int], Completion] = {}
    for group in groups:
        for completion in group:
            merged[completion.key] = prefer(merged.get(completion.key), completion)
    return sorted(merged.values(), key=lambda c: c.key)


def successes_by_phase_run(
    completions: Iterable[Completion],
) -> dict[PhaseRun, frozenset[str]]:
    """Group the successful processors of ``completions`` by phase-run."""
    found: dict[PhaseRun, set[str]] = {}
    for completion in completions:
        bucket = found.setdefault(completion.phase_run, set())
        if completion.status.value == "success":
            bucket.add(completion.processor)
    return {run: frozenset(names) for run, names in found.items()}


def keeps_executions_with_claims(store: object) -> bool:
    """Whether ``store``'s ``claim_triggers`` takes the won triggers' execution records
    and keeps them in the claim's own transaction (SQL stores)."""
    return bool(getattr(store, "keeps_executions_with_claims", False))


def claim_triggers(
    store: ClaimRegistry,
    triggers: Sequence[Trigger],
    executions: Sequence[PhaseExecution] | None = None,
) -> list[bool]:
    """Claim several triggers, each a compare-and-set of its own; one answer per trigger.

    A store with a ``claim_triggers`` method decides them together (SQL: one
    transaction, one commit); any other claims them one by one. ``executions`` (one per
    trigger) are kept with the won claims by a store that
    :func:`keeps_executions_with_claims`; any other store ignores them.
    """
    if executions is not None and keeps_executions_with_claims(store):
        return list(store.claim_triggers(triggers, executions))  # type: ignore[attr-defined]
    together = getattr(store, "claim_triggers", None)
    if together is not None:
        return list(together(triggers))
    return [store.claim_trigger(trigger) for trigger in triggers]


def mark_delivered(store: Outbox, trigger_ids: Sequence[str], delivered_at: datetime) -> None:
    """Mark several triggers delivered (in one transaction where the store can)."""
    together = getattr(store, "mark_delivered_many", None)
    if together is not None:
        together(trigger_ids, delivered_at)
        return
    for trigger_id in trigger_ids:
        store.mark_delivered(trigger_id, delivered_at)


def completions_of_runs(
    store: CompletionLog, run_keys: Sequence[str]
) -> dict[str, list[Completion]]:
    """The current completions of each run key (one query where the store can)."""
    together = getattr(store, "completions_of_runs", None)
    if together is not None:
        return dict(together(run_keys))
    return {key: store.completions(key) for key in run_keys}


def triggers_of_runs(store: Outbox, run_keys: Sequence[str]) -> dict[str, list[OutboxEntry]]:
    """The claimed triggers of each run key (one query where the store can)."""
    together = getattr(store, "triggers_of_runs", None)
    if together is not None:
        return dict(together(run_keys))
    return {key: store.triggers(key) for key in run_keys}


def record_phase_executions(store: PhaseLog, executions: Sequence[PhaseExecution]) -> None:
    """Keep several phase executions (together where the store can, else one by one)."""
    together = getattr(store, "record_phase_executions", None)
    if together is not None:
        together(executions)
        return
    for execution in executions:
        store.record_phase_execution(execution)


# What earlier releases called the one wide protocol; kept for code written against it.
CompletionStore = FullStore
