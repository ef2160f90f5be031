"""The Firestore store against Google's emulator: the MemoryStore's semantics, capability
by capability, plus compare-and-set races across threads and processes and real faults."""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from records import PIPELINE, T0, completion, execution, timeout, trigger

from phasegate.errors import TransientStoreError
from phasegate.model import PhaseRun, RecordSet, Status
from phasegate.stores.base import ALL_CAPABILITIES, FullStore
from phasegate.stores.firestore import CHUNK, FirestoreStore
from phasegate.stores.gcp_urls import open_gcp_store, parse_firestore_url

RUN = PhaseRun("phase2", "2026-01-28")


def test_firestore_store_declares_every_capability(firestore_store_factory: Any) -> None:
    """A Firestore store is a full store: it declares and implements every capability."""
    store = firestore_store_factory()
    assert store.capabilities == ALL_CAPABILITIES
    assert isinstance(store, FullStore)
    store.ping()


def test_batch_answers_each_phase_runs_successes(firestore_store_factory: Any) -> None:
    """One batch touching several phase-runs and attempts answers each one's successes."""
    store = firestore_store_factory()
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
    later = store.record_completions([completion("b", at=T0 + timedelta(minutes=1))])
    assert later == {RUN: {"a", "b"}}


def test_success_is_sticky_and_the_latest_failure_stands(firestore_store_factory: Any) -> None:
    """A later failure never replaces a success; a later report replaces a failure."""
    store = firestore_store_factory()
    store.record_completions([completion("a", Status.FAILED)])
    store.record_completions([completion("a", at=T0 + timedelta(minutes=1))])
    answer = store.record_completions([completion("a", Status.FAILED, at=T0 + timedelta(hours=1))])
    assert answer == {RUN: {"a"}}
    (current,) = store.completions("2026-01-28")
    assert current.status is Status.SUCCESS
    assert current.occurred_at == T0 + timedelta(minutes=1)
    store.record_completions([completion("b", Status.FAILED, at=T0)])
    store.record_completions([completion("b", Status.FAILED, at=T0 + timedelta(minutes=5))])
    assert store.completions("2026-01-28", "phase2")[1].occurred_at == T0 + timedelta(minutes=5)


def test_same_batch_twice_changes_nothing(firestore_store_factory: Any) -> None:
    """Recording the same batch again is idempotent: same state, same history, same answer."""
    store = firestore_store_factory()
    batch = [completion("a"), completion("b", Status.FAILED), completion("a")]
    first = store.record_completions(batch)
    state = (store.completions("2026-01-28"), store.history("2026-01-28"))
    assert store.record_completions(batch) == first
    assert (store.completions("2026-01-28"), store.history("2026-01-28")) == state
    assert len(state[1]) == 2


def test_history_keeps_every_distinct_report_oldest_first(firestore_store_factory: Any) -> None:
    """Every distinct report is kept in history, oldest first, metadata intact."""
    store = firestore_store_factory()
    reports = [
        completion("a", Status.FAILED, at=T0 + timedelta(minutes=2), metadata={"x": [1, "é"]}),
        completion("a", at=T0 + timedelta(minutes=3)),
        completion("b", at=T0 + timedelta(minutes=1)),
    ]
    store.record_completions(reports)
    store.record_completions(reports[:1])
    history = store.history("2026-01-28")
    assert [c.occurred_at for c in history] == [T0 + timedelta(minutes=m) for m in (1, 2, 3)]
    assert history[1].metadata == {"x": [1, "é"]}
    assert store.history("2026-01-29") == []


def test_batch_larger_than_one_transaction_is_recorded_whole(firestore_store_factory: Any) -> None:
    """A batch beyond one transaction's chunk is recorded and answered in full."""
    store = firestore_store_factory()
    batch = [completion(f"p{i:03d}") for i in range(CHUNK * 2 + 30)]
    answer = store.record_completions(batch)
    assert answer == {RUN: {c.processor for c in batch}}
    assert len(store.completions("2026-01-28")) == len(batch)


def test_runs_are_listed_newest_first(firestore_store_factory: Any) -> None:
    """Run keys from completions and claims are listed greatest first, up to the limit."""
    store = firestore_store_factory()
    store.record_completions([completion(run_key=k) for k in ("2026-01-01", "2026-01-03")])
    store.claim_trigger(trigger(run_key="2026-01-02"))
    assert store.list_runs() == ["2026-01-03", "2026-01-02", "2026-01-01"]
    assert store.list_runs(limit=1) == ["2026-01-03"]


@pytest.mark.parametrize("run_key", ["a/b", "..", "__x__", "r|1%2F", "é" * 600])
def test_any_run_key_makes_a_safe_document_id(firestore_store_factory: Any, run_key: str) -> None:
    """Slashes, dots, reserved patterns, separators and long keys all round-trip."""
    store = firestore_store_factory()
    store.record_completions([completion(run_key=run_key)])
    assert store.claim_trigger(trigger(run_key=run_key))
    assert [c.run_key for c in store.completions(run_key)] == [run_key]
    assert [e.trigger.run_key for e in store.triggers(run_key)] == [run_key]


def test_claim_is_won_once_and_enters_the_outbox(firestore_store_factory: Any) -> None:
    """The first claim wins and its trigger is pending; a second claim loses."""
    store = firestore_store_factory()
    assert store.claim_trigger(trigger()) is True
    assert store.claim_trigger(trigger()) is False
    assert store.claim_trigger(trigger(attempt=2)) is True
    (entry, second) = store.triggers("2026-01-28")
    assert entry.trigger == trigger()
    assert not entry.delivered
    assert [e.trigger for e in store.pending_triggers(T0)] == [trigger(), second.trigger]


def test_twenty_threads_claiming_have_exactly_one_winner(firestore_store_factory: Any) -> None:
    """Compare-and-set: of 20 threads on separate clients, exactly one claim wins."""
    url = f"firestore://phasegate-test?prefix=race{id(object())}"
    stores = [firestore_store_factory(f"s{i}", url=url) for i in range(20)]
    barrier = threading.Barrier(20)
    results: list[bool] = []
    lock = threading.Lock()

    def claim(store: FirestoreStore) -> None:
        barrier.wait()
        won = store.claim_trigger(trigger())
        with lock:
            results.append(won)

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [False] * 19 + [True]
    assert len(stores[0].triggers("2026-01-28")) == 1


def _claim_in_process(url: str, barrier: Any, results: Any) -> None:
    store = open_gcp_store(url, pipeline=PIPELINE, name="child")
    store.ping()
    barrier.wait()
    results.put(store.claim_trigger(trigger()))  # type: ignore[union-attr]
    store.close()


@pytest.mark.slow
def test_processes_racing_on_the_emulator_have_exactly_one_winner(
    firestore_store_factory: Any, firestore_url: Any
) -> None:
    """Exactly one of several spawned processes, each with its own client, wins a claim."""
    url = firestore_url()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(6)
    results = context.Queue()
    processes = [
        context.Process(target=_claim_in_process, args=(url, barrier, results)) for _ in range(6)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=90) for _ in processes]
    for process in processes:
        process.join(30)
    assert sorted(outcomes) == [False] * 5 + [True]
    assert len(firestore_store_factory(url=url).triggers("2026-01-28")) == 1


def test_timeout_is_recorded_once_per_phase_run(firestore_store_factory: Any) -> None:
    """record_timeout is compare-and-set per phase-run and attempt."""
    store = firestore_store_factory()
    assert store.record_timeout(timeout()) is True
    assert store.record_timeout(replace(timeout(), missing=("x",))) is False
    assert store.record_timeout(timeout(attempt=2)) is True
    assert sorted(t.attempt for t in store.timeouts("2026-01-28")) == [1, 2]
    assert store.timeouts("2026-01-28")[0].missing == ("b",)


def test_a_leased_trigger_is_hidden_until_its_lease_expires(firestore_store_factory: Any) -> None:
    """A lease hides the trigger from pending and from other owners until it expires."""
    store = firestore_store_factory()
    store.claim_trigger(trigger())
    (leased,) = store.lease_triggers("one", T0, T0 + timedelta(minutes=1))
    assert (leased.lease_owner, leased.lease_expires_at) == ("one", T0 + timedelta(minutes=1))
    assert store.pending_triggers(T0) == []
    assert store.lease_triggers("two", T0 + timedelta(seconds=30), T0 + timedelta(minutes=2)) == []
    later = T0 + timedelta(minutes=1)
    (again,) = store.lease_triggers("two", later, later + timedelta(minutes=1))
    assert again.lease_owner == "two"


def test_concurrent_dispatchers_never_lease_the_same_trigger(firestore_store_factory: Any) -> None:
    """Eight dispatchers leasing at once share the triggers with no trigger leased twice."""
    url = f"firestore://phasegate-test?prefix=lease{id(object())}"
    store = firestore_store_factory(url=url)
    for day in range(1, 13):
        store.claim_trigger(trigger(run_key=f"2026-02-{day:02d}"))
    owners = [firestore_store_factory(f"d{i}", url=url) for i in range(8)]
    barrier = threading.Barrier(len(owners))
    leased: list[str] = []
    lock = threading.Lock()

    def lease(index: int, owner: FirestoreStore) -> None:
        barrier.wait()
        got = owner.lease_triggers(f"d{index}", T0, T0 + timedelta(minutes=5), limit=4)
        with lock:
            leased.extend(e.trigger.trigger_id for e in got)

    threads = [threading.Thread(target=lease, args=pair) for pair in enumerate(owners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(leased) == len(set(leased))
    assert store.pending_triggers(T0) == []
    assert len(leased) + len(store.lease_triggers("late", T0, T0 + timedelta(minutes=5))) == 12


def test_delivery_failures_count_attempts_and_wait(firestore_store_factory: Any) -> None:
    """A failed attempt is counted, drops the lease and waits for its next attempt time."""
    store = firestore_store_factory()
    trigger_id = trigger().trigger_id
    store.claim_trigger(trigger())
    store.lease_triggers("one", T0, T0 + timedelta(minutes=1))
    store.record_delivery_failure(trigger_id, "receiver down", T0 + timedelta(seconds=30))
    (entry,) = store.triggers("2026-01-28")
    assert (entry.attempts, entry.last_error, entry.lease_owner) == (1, "receiver down", None)
    assert store.pending_triggers(T0 + timedelta(seconds=29)) == []
    assert len(store.pending_triggers(T0 + timedelta(seconds=30))) == 1
    store.record_delivery_failure(trigger_id, "x" * 5000, T0 + timedelta(minutes=1))
    (entry,) = store.triggers("2026-01-28")
    assert entry.attempts == 2
    assert len(entry.last_error or "") == 1024


def test_delivered_stays_delivered(firestore_store_factory: Any) -> None:
    """mark_delivered is idempotent, clears the lease, and later failures change nothing."""
    store = firestore_store_factory()
    trigger_id = trigger().trigger_id
    store.claim_trigger(trigger())
    store.lease_triggers("one", T0, T0 + timedelta(minutes=1))
    store.mark_delivered(trigger_id, T0 + timedelta(seconds=5))
    store.mark_delivered(trigger_id, T0 + timedelta(seconds=9))
    store.record_delivery_failure(trigger_id, "late failure", T0 + timedelta(minutes=1))
    store.mark_delivered("no-such-trigger", T0)
    (entry,) = store.triggers("2026-01-28")
    assert entry.delivered_at == T0 + timedelta(seconds=5)
    assert (entry.attempts, entry.lease_owner, entry.last_error) == (0, None, None)
    assert store.pending_triggers(T0 + timedelta(days=1)) == []


def test_phase_executions_keep_the_first_and_list_newest_first(
    firestore_store_factory: Any,
) -> None:
    """The first execution of a phase-run is kept; lists filter by phase or run, newest first."""
    store = firestore_store_factory()
    first = execution()
    store.record_phase_execution(first)
    store.record_phase_execution(replace(first, processors=("other",)))
    store.record_phase_execution(execution(run_key="2026-01-29", at=T0 + timedelta(days=1)))
    store.record_phase_execution(execution(phase="phase3", at=T0 + timedelta(hours=2)))
    assert [e.run_key for e in store.phase_executions("phase2")] == ["2026-01-29", "2026-01-28"]
    assert store.phase_executions("phase2", run_key="2026-01-28") == [first]
    assert [e.phase for e in store.phase_executions(run_key="2026-01-28")] == ["phase3", "phase2"]
    assert len(store.phase_executions(limit=2)) == 2


def _populate(store: FirestoreStore) -> None:
    store.record_completions(
        [completion("a"), completion("b", Status.FAILED), completion("c", run_key="2026-02-01")]
    )
    store.claim_trigger(trigger())
    store.claim_trigger(trigger(run_key="2026-02-01"))
    store.mark_delivered(trigger().trigger_id, T0 + timedelta(seconds=1))
    store.record_phase_execution(execution())
    store.record_timeout(timeout())


def test_export_and_import_round_trip_idempotently(firestore_store_factory: Any) -> None:
    """What one store exports, another imports to the same records; twice changes nothing."""
    source, target = firestore_store_factory("source"), firestore_store_factory("target")
    _populate(source)
    records = source.export_records("2026-01-01", "2026-01-31")
    assert records.run_keys == {"2026-01-28"}
    assert len(records.completions) == 2
    assert len(records.triggers) == 1
    target.import_records(records)
    target.import_records(records)
    assert target.export_records("2026-01-01", "2026-01-31") == records
    assert target.list_runs() == ["2026-01-28"]
    assert target.record_completions([completion("b")]) == {RUN: {"a", "b"}}


def test_import_keeps_success_and_delivery_and_drops_copied_leases(
    firestore_store_factory: Any,
) -> None:
    """Importing an older failure or an undelivered copy never undoes what is held."""
    store = firestore_store_factory()
    _populate(store)
    store.claim_trigger(trigger(run_key="2026-01-30"))
    store.lease_triggers("local", T0, T0 + timedelta(hours=1))
    leased_copy = replace(
        store.triggers("2026-01-30")[0], attempts=3, lease_owner="remote", lease_expires_at=T0
    )
    undelivered = replace(store.triggers("2026-01-28")[0], delivered_at=None, attempts=5)
    stale = completion("a", Status.FAILED, at=T0 + timedelta(hours=1))
    store.import_records(
        RecordSet(completions=(stale, completion("b")), triggers=(undelivered, leased_copy))
    )
    assert {c.processor: c.status for c in store.completions("2026-01-28")} == {
        "a": Status.SUCCESS,
        "b": Status.SUCCESS,
    }
    assert store.triggers("2026-01-28")[0].delivered
    (imported,) = store.triggers("2026-01-30")
    assert (imported.attempts, imported.lease_owner) == (3, None)
    assert store.record_completions([completion("c")])[RUN] == {"a", "b", "c"}


def test_a_killed_emulator_is_a_transient_error_and_a_restart_loses_data(
    private_firestore_emulator: Any,
) -> None:
    """Killed emulator: writes raise TransientStoreError; restarted empty, the store works."""
    location = parse_firestore_url("firestore://phasegate-test")
    store = FirestoreStore(location, pipeline=PIPELINE, name="primary", timeout=5)
    try:
        store.record_completions([completion("a")])
        private_firestore_emulator.kill()
        with pytest.raises(TransientStoreError, match="primary"):
            store.record_completions([completion("b")])
        with pytest.raises(TransientStoreError):
            store.ping()
        private_firestore_emulator.restart_empty()
        # gRPC reconnects with backoff after the outage; what callers see meanwhile is
        # the transient error the tracker retries (bounded here as its policy is).
        deadline = time.monotonic() + 60
        while True:
            try:
                assert store.completions("2026-01-28") == []
                break
            except TransientStoreError:
                if time.monotonic() > deadline:
                    raise
        assert store.record_completions([completion("b")]) == {RUN: {"b"}}
    finally:
        store.close()


def test_concurrent_reports_of_one_phase_run_are_all_seen_by_the_last(
    firestore_store_factory: Any,
) -> None:
    """Sixteen processors reporting at once: none is lost, and some write answers all 16."""
    url = f"firestore://phasegate-test?prefix=fan{id(object())}"
    stores = [firestore_store_factory(f"w{i}", url=url) for i in range(16)]
    barrier = threading.Barrier(len(stores))
    answers: list[frozenset[str]] = []
    lock = threading.Lock()

    def report(index: int, store: FirestoreStore) -> None:
        barrier.wait()
        answer = store.record_completions([completion(f"p{index:02d}")])[RUN]
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=report, args=pair) for pair in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    everyone = frozenset(f"p{i:02d}" for i in range(16))
    assert len(answers) == 16
    assert everyone in answers
    assert stores[0].record_completions([]) == {}
    assert {c.processor for c in stores[0].completions("2026-01-28")} == everyone
