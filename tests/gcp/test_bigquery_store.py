"""The BigQuery store against the BigQuery emulator: an append-only ledger whose reads
fold duplicates, with the MemoryStore's semantics for each capability it declares."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from records import T0, completion, execution, timeout, trigger

from phasegate.errors import TransientStoreError
from phasegate.model import OutboxEntry, PhaseRun, RecordSet, Status
from phasegate.stores.base import Capability, CompletionLog, PhaseLog, Replicable
from phasegate.stores.bigquery_rows import CLUSTERING, SCHEMAS, execution_row
from phasegate.stores.memory import MemoryStore

RUN = PhaseRun("phase2", "2026-01-28")


def test_bigquery_declares_no_claims_and_no_outbox(bigquery_store_factory: Any) -> None:
    """The ledger declares completions, phase log and replication only, and implements them."""
    store = bigquery_store_factory()
    assert store.capabilities == {
        Capability.COMPLETIONS,
        Capability.PHASE_LOG,
        Capability.REPLICATION,
    }
    assert all(isinstance(store, p) for p in (CompletionLog, PhaseLog, Replicable))
    assert not hasattr(store, "claim_trigger")
    assert not hasattr(store, "lease_triggers")
    store.ping()


def test_tables_are_created_partitioned_and_clustered(bigquery_store_factory: Any) -> None:
    """First use creates every table, partitioned by day on recorded_at, clustered by run key."""
    store = bigquery_store_factory()
    store.ping()
    for kind in SCHEMAS:
        table = store.client.get_table(store.table(kind))
        assert table.time_partitioning.field == "recorded_at"
        assert table.time_partitioning.type_ == "DAY"
        assert table.clustering_fields == CLUSTERING[kind]
        assert table.clustering_fields[:2] == ["pipeline", "run_key"]


def test_batch_answers_each_phase_runs_successes(bigquery_store_factory: Any) -> None:
    """One batch touching several phase-runs and attempts answers each one's successes."""
    store = bigquery_store_factory()
    answer = store.record_completions(
        [
            completion("a"),
            completion("b", Status.FAILED),
            completion("c", phase="phase3"),
            completion("a", attempt=2, status=Status.FAILED),
        ]
    )
    assert answer == {
        RUN: {"a"},
        PhaseRun("phase3", "2026-01-28"): {"c"},
        PhaseRun("phase2", "2026-01-28", 2): frozenset(),
    }
    assert store.record_completions([completion("b", at=T0 + timedelta(minutes=1))]) == {
        RUN: {"a", "b"}
    }


def test_success_is_sticky_and_the_latest_failure_stands(bigquery_store_factory: Any) -> None:
    """Read folding: the earliest success stands; without one, the latest report does."""
    store = bigquery_store_factory()
    store.record_completions(
        [
            completion("a", Status.FAILED),
            completion("a", at=T0 + timedelta(minutes=2)),
            completion("a", at=T0 + timedelta(minutes=1)),
            completion("a", Status.FAILED, at=T0 + timedelta(hours=1)),
            completion("b", Status.FAILED),
            completion("b", Status.FAILED, at=T0 + timedelta(minutes=5)),
        ]
    )
    a, b = store.completions("2026-01-28")
    assert (a.status, a.occurred_at) == (Status.SUCCESS, T0 + timedelta(minutes=1))
    assert (b.status, b.occurred_at) == (Status.FAILED, T0 + timedelta(minutes=5))
    assert [c.processor for c in store.completions("2026-01-28", "phase3")] == []


def test_rows_appended_twice_are_read_once(bigquery_store_factory: Any) -> None:
    """Insert ids are best-effort: the same rows appended twice still read as one."""
    store = bigquery_store_factory()
    batch = [completion("a"), completion("b", Status.FAILED, metadata={"x": "é"})]
    first = store.record_completions(batch)
    assert store.record_completions(batch) == first
    store._append("executions", [execution_row(execution())] * 2)
    raw = store._query(
        f"SELECT COUNT(*) AS n FROM `{store.table('completions')}` WHERE pipeline = @pipeline"
    )
    assert raw[0]["n"] == 4  # the emulator keeps every appended row
    assert len(store.completions("2026-01-28")) == 2
    assert len(store.history("2026-01-28")) == 2
    assert store.history("2026-01-28")[1].metadata == {"x": "é"}
    assert store.phase_executions() == [execution()]


def test_history_keeps_every_distinct_report_oldest_first(bigquery_store_factory: Any) -> None:
    """Every distinct report is kept in history, oldest first."""
    store = bigquery_store_factory()
    store.record_completions(
        [
            completion("a", Status.FAILED, at=T0 + timedelta(minutes=2)),
            completion("a", at=T0 + timedelta(minutes=3)),
            completion("b", at=T0 + timedelta(minutes=1)),
        ]
    )
    history = store.history("2026-01-28")
    assert [c.occurred_at for c in history] == [T0 + timedelta(minutes=m) for m in (1, 2, 3)]
    assert store.history("2026-01-29") == []


def test_runs_are_listed_newest_first(bigquery_store_factory: Any) -> None:
    """Run keys from completions and mirrored triggers are listed greatest first."""
    store = bigquery_store_factory()
    store.record_completions([completion(run_key=k) for k in ("2026-01-01", "2026-01-03")])
    store.import_records(RecordSet(triggers=(OutboxEntry(trigger(run_key="2026-01-02"), T0),)))
    assert store.list_runs() == ["2026-01-03", "2026-01-02", "2026-01-01"]
    assert store.list_runs(limit=1) == ["2026-01-03"]


def test_delivery_events_fold_into_the_mirrored_trigger(bigquery_store_factory: Any) -> None:
    """Failures count attempts; the first delivery stands; events for unknown triggers drop."""
    store = bigquery_store_factory()
    trigger_id = trigger().trigger_id
    store.import_records(RecordSet(triggers=(OutboxEntry(trigger(), T0),)))
    store.record_delivery_failure(trigger_id, "receiver down", T0 + timedelta(seconds=30))
    (entry,) = store.triggers("2026-01-28")
    assert (entry.attempts, entry.last_error) == (1, "receiver down")
    store.mark_delivered(trigger_id, T0 + timedelta(seconds=40))
    store.mark_delivered(trigger_id, T0 + timedelta(seconds=50))
    store.record_delivery_failure(trigger_id, "late", T0 + timedelta(minutes=5))
    store.mark_delivered("no-such-trigger", T0)
    (entry,) = store.triggers("2026-01-28")
    assert entry.delivered_at == T0 + timedelta(seconds=40)
    assert (entry.attempts, entry.last_error, entry.lease_owner) == (1, None, None)


def test_phase_log_keeps_the_first_execution_and_timeout(bigquery_store_factory: Any) -> None:
    """The first execution and timeout of a phase-run stand; lists filter, newest first."""
    store = bigquery_store_factory()
    first = execution()
    store.record_phase_execution(first)
    store.record_phase_execution(replace(first, processors=("other",)))
    store.record_phase_execution(execution(run_key="2026-01-29", at=T0 + timedelta(days=1)))
    store.record_phase_execution(execution(phase="phase3", at=T0 + timedelta(hours=2)))
    assert [e.run_key for e in store.phase_executions("phase2")] == ["2026-01-29", "2026-01-28"]
    assert store.phase_executions("phase2", run_key="2026-01-28") == [first]
    assert [e.phase for e in store.phase_executions(run_key="2026-01-28")] == ["phase3", "phase2"]
    assert len(store.phase_executions(limit=2)) == 2
    store.import_records(RecordSet(timeouts=(timeout(),)))
    store.import_records(RecordSet(timeouts=(replace(timeout(), missing=("x",)),)))
    assert store.timeouts("2026-01-28") == [timeout()]


def _populated_memory() -> MemoryStore:
    memory = MemoryStore(pipeline="test-pipeline")
    memory.record_completions(
        [completion("a"), completion("b", Status.FAILED), completion("c", run_key="2026-02-01")]
    )
    memory.claim_trigger(trigger())
    memory.claim_trigger(trigger(run_key="2026-01-30"))
    memory.mark_delivered(trigger().trigger_id, T0 + timedelta(seconds=1))
    memory.record_phase_execution(execution())
    memory.record_timeout(timeout())
    return memory


def test_import_from_the_primary_round_trips_and_is_idempotent(
    bigquery_store_factory: Any,
) -> None:
    """What a full store exports, the ledger imports and exports back unchanged, once."""
    store = bigquery_store_factory()
    records = _populated_memory().export_records("2026-01-01", "2026-01-31")
    store.import_records(records)
    appended = store._query(
        f"SELECT COUNT(*) AS n FROM `{store.table('outbox')}` WHERE pipeline = @pipeline"
    )[0]["n"]
    store.import_records(records)
    again = store._query(
        f"SELECT COUNT(*) AS n FROM `{store.table('outbox')}` WHERE pipeline = @pipeline"
    )[0]["n"]
    assert appended == again == 2
    assert store.export_records("2026-01-01", "2026-01-31") == records
    assert store.record_completions([completion("b")]) == {RUN: {"a", "b"}}


def test_import_keeps_success_and_delivery_and_drops_leases(bigquery_store_factory: Any) -> None:
    """Importing an older failure or an undelivered copy never undoes what is held."""
    store = bigquery_store_factory()
    memory = _populated_memory()
    store.import_records(memory.export_records("2026-01-01", "2026-01-31"))
    delivered, waiting = memory.triggers("2026-01-28")[0], memory.triggers("2026-01-30")[0]
    store.import_records(
        RecordSet(
            completions=(completion("a", Status.FAILED, at=T0 + timedelta(hours=1)),),
            triggers=(
                replace(delivered, delivered_at=None, attempts=5),
                replace(waiting, attempts=2, lease_owner="remote", lease_expires_at=T0),
            ),
        )
    )
    assert store.completions("2026-01-28")[0].status is Status.SUCCESS
    assert store.triggers("2026-01-28")[0].delivered
    (copied,) = store.triggers("2026-01-30")
    assert (copied.attempts, copied.lease_owner, copied.lease_expires_at) == (2, None, None)


def test_a_dropped_table_is_a_transient_error_then_recreated(bigquery_store_factory: Any) -> None:
    """Streaming into a missing table is retried: the next call creates the tables again."""
    store = bigquery_store_factory()
    store.record_completions([completion("a")])
    store.client.delete_table(store.table("completions"))
    with pytest.raises(TransientStoreError, match="completions table not found"):
        store.record_completions([completion("b")])
    assert store.record_completions([completion("b")]) == {RUN: {"b"}}
