"""The store contract: every backend passes the same tests (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from phasegate.errors import StoreError, TransientStoreError
from phasegate.model import (
    Completion,
    PhaseExecution,
    RecordSet,
    Status,
    TimeoutReport,
    Trigger,
    TriggerReason,
    trigger_id_for,
)
from phasegate.stores.sql import SqlStore
from support import backends

T0 = datetime(2026, 1, 28, 6, 0, tzinfo=UTC)
PIPELINE = "test-pipeline"


def completion(
    processor: str = "bdl_boxscores",
    status: Status = Status.SUCCESS,
    *,
    at: datetime = T0,
    run_key: str = "2026-01-28",
    phase: str = "phase2",
    metadata: dict[str, Any] | None = None,
) -> Completion:
    return Completion(
        phase=phase,
        run_key=run_key,
        processor=processor,
        status=status,
        occurred_at=at,
        correlation_id="corr-1",
        metadata=metadata or {"rows": 10},
    )


def trigger(run_key: str = "2026-01-28", phase: str = "phase2", at: datetime = T0) -> Trigger:
    return Trigger(
        trigger_id=trigger_id_for(PIPELINE, phase, run_key),
        pipeline=PIPELINE,
        phase=phase,
        next_phase="phase3",
        run_key=run_key,
        reason=TriggerReason.COMPLETE,
        triggered_at=at,
        correlation_id="corr-1",
        processors=("a", "b"),
    )


pytestmark = backends()


def test_recording_returns_the_successes_of_the_phase_in_the_same_transaction(
    make_store: Any,
) -> None:
    """The write answers which processors of that phase and run have succeeded so far."""
    store = make_store()
    assert store.record_completion(completion("a")) == {"a"}
    assert store.record_completion(completion("b", Status.FAILED)) == {"a"}
    assert store.record_completion(completion("c", phase="phase3")) == {"c"}
    assert store.record_completion(completion("b", at=T0 + timedelta(minutes=1))) == {"a", "b"}
    assert store.record_completion(completion("a", Status.FAILED, at=T0 + timedelta(hours=1))) == {
        "a",
        "b",
    }


def test_recording_the_same_completion_twice_is_harmless(make_store: Any) -> None:
    """An identical report stored twice leaves one current record and one history entry."""
    store = make_store()
    store.record_completion(completion())
    store.record_completion(completion())
    assert store.completions("2026-01-28") == [completion()]
    assert len(store.history("2026-01-28")) == 1


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (Status.SUCCESS, Status.FAILED, Status.SUCCESS),
        (Status.FAILED, Status.SUCCESS, Status.SUCCESS),
        (Status.FAILED, Status.FAILED, Status.FAILED),
    ],
)
def test_success_is_sticky_and_history_keeps_every_report(
    make_store: Any, first: Status, second: Status, expected: Status
) -> None:
    """A late failure never undoes a success; both reports stay in history."""
    store = make_store()
    store.record_completion(completion(status=first, at=T0))
    store.record_completion(completion(status=second, at=T0 + timedelta(minutes=5)))
    [current] = store.completions("2026-01-28")
    assert current.status is expected
    statuses = [c.status for c in store.history("2026-01-28")]
    assert statuses == [first, second]


def test_an_out_of_order_older_failure_does_not_replace_a_newer_one(make_store: Any) -> None:
    """Among failures the latest report stands, whatever order they arrive in."""
    store = make_store()
    store.record_completion(
        completion(status=Status.FAILED, at=T0 + timedelta(minutes=9), metadata={"n": 2})
    )
    store.record_completion(completion(status=Status.FAILED, at=T0, metadata={"n": 1}))
    [current] = store.completions("2026-01-28")
    assert current.metadata == {"n": 2}


def test_completions_are_scoped_by_phase_and_round_trip_their_fields(make_store: Any) -> None:
    """Reading by phase returns that phase's records with metadata and times intact."""
    store = make_store()
    one = completion("a", metadata={"nested": {"x": [1, 2]}, "s": "é"})
    other = completion("b", phase="phase3", at=T0 + timedelta(microseconds=123456))
    store.record_completion(one)
    store.record_completion(other)
    assert store.completions("2026-01-28", "phase2") == [one]
    assert store.completions("2026-01-28", "phase3") == [other]
    assert store.completions("2026-01-28", "phase3")[0].occurred_at.tzinfo is not None
    assert store.completions("2026-01-29") == []


def test_list_runs_is_newest_first_and_limited(make_store: Any) -> None:
    """Runs come back newest first, capped at ``limit``."""
    store = make_store()
    for day in (3, 1, 2):
        store.record_completion(completion(run_key=f"2026-01-0{day}"))
    assert store.list_runs() == ["2026-01-03", "2026-01-02", "2026-01-01"]
    assert store.list_runs(limit=2) == ["2026-01-03", "2026-01-02"]


def test_only_the_first_claim_wins_and_lands_in_the_outbox(make_store: Any) -> None:
    """A claim is compare-and-set: the winner's trigger is pending delivery."""
    store = make_store()
    assert store.claim_trigger(trigger()) is True
    assert store.claim_trigger(trigger(at=T0 + timedelta(seconds=1))) is False
    [pending] = store.pending_triggers(T0 + timedelta(hours=1))
    assert pending.trigger == trigger()
    assert pending.delivered_at is None
    assert store.list_runs() == ["2026-01-28"]


def test_delivery_failures_defer_and_delivery_clears_the_outbox(make_store: Any) -> None:
    """A failed delivery is counted and deferred; a delivered trigger is never pending again."""
    store = make_store()
    store.claim_trigger(trigger())
    later = T0 + timedelta(minutes=1)
    store.record_delivery_failure(trigger().trigger_id, "HTTP 503", later)
    assert store.pending_triggers(T0 + timedelta(seconds=30)) == []
    [entry] = store.pending_triggers(later)
    assert (entry.attempts, entry.last_error) == (1, "HTTP 503")
    store.mark_delivered(trigger().trigger_id, later)
    store.mark_delivered(trigger().trigger_id, later + timedelta(seconds=5))
    assert store.pending_triggers(later + timedelta(days=1)) == []
    [entry] = store.triggers("2026-01-28")
    assert entry.delivered_at == later


def test_phase_executions_and_timeouts_are_recorded_once(make_store: Any) -> None:
    """Executions are idempotent per phase and run; a timeout reports true only the first time."""
    store = make_store()
    execution = PhaseExecution(
        phase="phase2",
        run_key="2026-01-28",
        started_at=T0,
        triggered_at=T0 + timedelta(minutes=42),
        processors=("a", "b"),
        reason=TriggerReason.COMPLETE,
        trigger_id=trigger().trigger_id,
    )
    store.record_phase_execution(execution)
    store.record_phase_execution(execution)
    assert store.phase_executions() == [execution]
    assert store.phase_executions("phase3") == []
    assert execution.duration_seconds == 42 * 60
    report = TimeoutReport("phase2", "2026-01-28", T0, T0 + timedelta(hours=2), ("b",))
    assert store.record_timeout(report) is True
    assert store.record_timeout(report) is False
    assert store.timeouts("2026-01-28") == [report]


def _everything(store: SqlStore) -> RecordSet:
    store.record_completion(completion("a"))
    store.record_completion(completion("b", Status.FAILED))
    store.record_completion(completion("b", Status.SUCCESS, at=T0 + timedelta(minutes=1)))
    store.record_completion(completion("a", run_key="2026-02-01"))
    store.claim_trigger(trigger())
    store.mark_delivered(trigger().trigger_id, T0 + timedelta(minutes=2))
    store.record_timeout(TimeoutReport("phase3", "2026-01-28", T0, T0, ("x",)))
    return store.export_records("2026-01-01", "2026-01-31")


def _normalised(records: RecordSet) -> tuple[Any, ...]:
    return (
        sorted(records.completions, key=lambda c: c.key),
        sorted(records.history, key=lambda c: (c.key, c.occurred_at)),
        sorted(records.triggers, key=lambda e: e.trigger.trigger_id),
        sorted(records.executions, key=lambda e: (e.phase, e.run_key)),
        sorted(records.timeouts, key=lambda t: (t.phase, t.run_key)),
    )


def test_export_then_import_copies_a_range_idempotently(make_store: Any) -> None:
    """Importing an export twice yields the same records as the source, nothing more."""
    source, target = make_store("source"), make_store("target")
    exported = _everything(source)
    assert exported.run_keys == {"2026-01-28"}
    assert target.import_records(exported) > 0
    target.import_records(exported)
    assert _normalised(target.export_records("2026-01-01", "2026-01-31")) == _normalised(exported)
    assert target.export_records("2026-02-01", "2026-02-28") == RecordSet()


def test_import_lets_success_win_and_delivery_stick(make_store: Any) -> None:
    """Merging a store that saw a success and a delivery upgrades the one that did not."""
    store = make_store()
    store.record_completion(completion(status=Status.FAILED, at=T0 + timedelta(hours=1)))
    store.claim_trigger(trigger())
    delivered_at = T0 + timedelta(minutes=3)
    other = RecordSet(
        completions=(completion(status=Status.SUCCESS),),
        triggers=(
            store.triggers("2026-01-28")[0].__class__(
                trigger=trigger(), claimed_at=T0, delivered_at=delivered_at
            ),
        ),
    )
    store.import_records(other)
    assert store.completions("2026-01-28")[0].status is Status.SUCCESS
    assert store.triggers("2026-01-28")[0].delivered_at == delivered_at


def test_concurrent_claims_from_threads_have_exactly_one_winner(make_store: Any) -> None:
    """20 threads claiming the same trigger at once: exactly one wins."""
    url_store = make_store()
    url_store.ping()
    stores = [url_store] + [make_store(url=url_store.url) for _ in range(9)]
    barrier = threading.Barrier(20)
    results: list[bool] = []
    lock = threading.Lock()

    def claim(index: int) -> None:
        barrier.wait()
        won = stores[index % len(stores)].claim_trigger(trigger())
        with lock:
            results.append(won)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 19 + [True]


def _claim_in_process(url: str, barrier: Any, results: Any) -> None:
    store = SqlStore(url, pipeline=PIPELINE, name="child")
    store.ensure_schema()
    barrier.wait()
    results.put(store.claim_trigger(trigger()))
    store.close()


@pytest.mark.slow
def test_concurrent_claims_from_processes_have_exactly_one_winner(make_store: Any) -> None:
    """20 processes claiming the same trigger at once: exactly one wins."""
    store = make_store()
    store.ensure_schema()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(20)
    results = context.Queue()
    processes = [
        context.Process(target=_claim_in_process, args=(store.url, barrier, results))
        for _ in range(20)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=90) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    results.close()
    results.join_thread()
    assert sorted(outcomes) == [False] * 19 + [True]
    assert len(store.pending_triggers(T0 + timedelta(days=1))) == 1


def test_a_newer_schema_version_is_refused(make_store: Any) -> None:
    """A store written by a newer phasegate is not silently misread."""
    store = make_store()
    assert store.schema_version() == 1
    with store._write_engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE phasegate_meta SET value = '99' WHERE `key` = 'schema_version'"
            if store.dialect == "mysql"
            else "UPDATE phasegate_meta SET value = '99' WHERE key = 'schema_version'"
        )
    fresh = make_store(url=store.url)
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        fresh.completions("2026-01-28")


def test_a_naive_timestamp_is_a_permanent_error(make_store: Any) -> None:
    """A timestamp without a timezone is refused, not stored ambiguously, and not retried."""
    store = make_store()
    naive = completion(at=datetime(2026, 1, 28, 6, 0))
    with pytest.raises(StoreError) as info:
        store.record_completion(naive)
    assert not isinstance(info.value, TransientStoreError)
    assert store.completions("2026-01-28") == []


def test_group_commit_batches_concurrent_writers(make_store: Any) -> None:
    """Concurrent writers share transactions, and every write is still stored."""
    store = make_store()
    store.ensure_schema()
    barrier = threading.Barrier(32)

    def write(index: int) -> None:
        barrier.wait()
        store.record_completion(completion(f"p{index:02d}"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.completions("2026-01-28")) == 32
    committer = store.group_committer
    assert committer is not None
    assert committer.operations == 32
    assert committer.batches < 32
