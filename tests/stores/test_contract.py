"""The store contract: every backend that declares a capability behaves the same.

Runs against every entry of ``store_factory`` (memory, SQLite, PostgreSQL, MariaDB).
Outbox, leases, the phase log and replication are in ``test_contract_outbox.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from phasegate.model import Answered, PhaseRun, Status, TimeoutReport
from phasegate.stores.base import Capability, CompletionSubmitter, Store, claim_triggers
from store_records import RUN, T0, completion, trigger

C = Capability


def _together(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` on ``count`` threads released at once; their results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_every_factory_store_is_a_store_with_declared_capabilities(store_factory: Any) -> None:
    """Each backend is a Store and declares what it implements."""
    store = store_factory()
    assert isinstance(store, Store)
    assert store.capabilities <= frozenset(Capability)
    assert store.capabilities


def test_a_batch_answers_each_phase_run_it_touched_attempts_apart(store_factory: Any) -> None:
    """The answer maps every phase-run of the batch (attempts distinct) to its successes."""
    store = store_factory.require(C.COMPLETIONS)
    answer = store.record_completions(
        [
            completion("a"),
            completion("b", Status.FAILED),
            completion("c", attempt=2),
            completion("d", phase="phase3"),
        ]
    )
    assert dict(answer) == {
        PhaseRun("phase2", RUN, 1): {"a"},
        PhaseRun("phase2", RUN, 2): {"c"},
        PhaseRun("phase3", RUN, 1): {"d"},
    }


def test_the_answer_is_read_after_the_write_and_includes_earlier_batches(
    store_factory: Any,
) -> None:
    """Successes recorded before count; a later failure never takes one away."""
    store = store_factory.require(C.COMPLETIONS)
    store.record_completions([completion("a")])
    later = T0 + timedelta(hours=1)
    answer = store.record_completions([completion("a", Status.FAILED, at=later), completion("b")])
    assert answer == {PhaseRun("phase2", RUN): {"a", "b"}}
    assert store.record_completions([completion("x", Status.FAILED, phase="p9")]) == {
        PhaseRun("p9", RUN): frozenset()
    }


SUCCESSES_ONLY = {"firestore"}
"""Backends whose answer is the successes alone: a claim reads their phase-runs back."""


def test_the_answer_carries_the_failures_and_the_first_report_of_each_phase_run(
    store_factory: Any,
) -> None:
    """What a claim needs besides the successes comes with the answer: the processors
    whose report stands as failed and the earliest report's time, this batch included."""
    store = store_factory.require(C.COMPLETIONS)
    store.record_completions([completion("a", at=T0 + timedelta(minutes=5))])
    answer = store.record_completions(
        [
            completion("b", Status.FAILED, at=T0 + timedelta(minutes=1)),
            completion("c", at=T0 + timedelta(minutes=9)),
            completion("d", Status.FAILED, at=T0 - timedelta(days=1), attempt=2),
        ]
    )
    first, second = PhaseRun("phase2", RUN, 1), PhaseRun("phase2", RUN, 2)
    assert answer == {first: {"a", "c"}, second: frozenset()}
    if store_factory.kind in SUCCESSES_ONLY:
        assert not isinstance(answer[first], Answered)
        return
    assert isinstance(answer[first], Answered)
    assert (answer[first].failed, answer[first].first_at) == ({"b"}, T0 + timedelta(minutes=1))
    assert (answer[second].failed, answer[second].first_at) == ({"d"}, T0 - timedelta(days=1))
    # As a read-back sees it: what stands now (b's success replaced its failure).
    later = store.record_completions([completion("b", at=T0 + timedelta(hours=1))])
    assert (later[first], later[first].failed) == ({"a", "b", "c"}, frozenset())
    assert later[first].first_at == T0 + timedelta(minutes=5)


def test_an_empty_batch_answers_nothing(store_factory: Any) -> None:
    """Recording no completions is harmless and answers no phase-run."""
    store = store_factory.require(C.COMPLETIONS)
    assert dict(store.record_completions([])) == {}
    assert store.list_runs() == []


def test_recording_the_same_batch_twice_is_harmless(store_factory: Any) -> None:
    """An identical batch stored twice leaves one current record and one history entry each."""
    store = store_factory.require(C.COMPLETIONS)
    batch = [completion("a"), completion("b", Status.FAILED)]
    first = store.record_completions(batch)
    assert store.record_completions(batch) == first
    assert store.completions(RUN) == sorted(batch, key=lambda c: c.key)
    assert len(store.history(RUN)) == 2


def test_duplicates_inside_one_batch_keep_one_record(store_factory: Any) -> None:
    """The same report twice in one batch is stored once; success still wins."""
    store = store_factory.require(C.COMPLETIONS)
    answer = store.record_completions(
        [completion("a"), completion("a"), completion("a", Status.FAILED, at=T0 + timedelta(1))]
    )
    assert answer == {PhaseRun("phase2", RUN): {"a"}}
    [current] = store.completions(RUN)
    assert current.status is Status.SUCCESS
    assert len(store.history(RUN)) == 2


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (Status.SUCCESS, Status.FAILED, Status.SUCCESS),
        (Status.FAILED, Status.SUCCESS, Status.SUCCESS),
        (Status.FAILED, Status.FAILED, Status.FAILED),
    ],
)
def test_success_is_sticky_and_history_keeps_every_report(
    store_factory: Any, first: Status, second: Status, expected: Status
) -> None:
    """A late failure never undoes a success; both reports stay in history, oldest first."""
    store = store_factory.require(C.COMPLETIONS)
    store.record_completions([completion(status=first, at=T0)])
    store.record_completions([completion(status=second, at=T0 + timedelta(minutes=5))])
    [current] = store.completions(RUN)
    assert current.status is expected
    assert [c.status for c in store.history(RUN)] == [first, second]


def test_an_out_of_order_older_failure_does_not_replace_a_newer_one(store_factory: Any) -> None:
    """Among failures the latest report stands, whatever order they arrive in."""
    store = store_factory.require(C.COMPLETIONS)
    newer = completion(status=Status.FAILED, at=T0 + timedelta(minutes=9), metadata={"n": 2})
    store.record_completions([newer])
    store.record_completions([completion(status=Status.FAILED, at=T0, metadata={"n": 1})])
    assert store.completions(RUN) == [newer]


def test_attempts_are_separate_identities(store_factory: Any) -> None:
    """A success in attempt 1 does not count for attempt 2, and both are kept."""
    store = store_factory.require(C.COMPLETIONS)
    store.record_completions([completion("a", attempt=1)])
    answer = store.record_completions([completion("a", Status.FAILED, attempt=2)])
    assert answer == {PhaseRun("phase2", RUN, 2): frozenset()}
    assert [(c.attempt, c.status) for c in store.completions(RUN)] == [
        (1, Status.SUCCESS),
        (2, Status.FAILED),
    ]
    assert [c.attempt for c in store.history(RUN)] == [1, 2]


def test_completions_are_scoped_by_phase_and_round_trip_their_fields(store_factory: Any) -> None:
    """Reading by phase returns that phase's records with metadata and aware times intact."""
    store = store_factory.require(C.COMPLETIONS)
    one = completion("a", metadata={"nested": {"x": [1, 2]}, "s": "é"})
    other = completion("b", phase="phase3", at=T0 + timedelta(microseconds=123456))
    store.record_completions([one, other])
    assert store.completions(RUN, "phase2") == [one]
    assert store.completions(RUN, "phase3") == [other]
    assert store.completions(RUN, "phase3")[0].occurred_at.tzinfo is not None
    assert store.completions("2026-01-29") == []


def test_list_runs_is_newest_first_and_limited(store_factory: Any) -> None:
    """Runs come back newest first, capped at ``limit``."""
    store = store_factory.require(C.COMPLETIONS)
    store.record_completions([completion(run_key=f"2026-01-0{day}") for day in (3, 1, 2)])
    assert store.list_runs() == ["2026-01-03", "2026-01-02", "2026-01-01"]
    assert store.list_runs(limit=2) == ["2026-01-03", "2026-01-02"]


def test_concurrent_batches_from_threads_are_all_recorded(store_factory: Any) -> None:
    """16 threads recording at once: every completion stored, each answer includes its own."""
    store = store_factory.require(C.COMPLETIONS)
    answers = _together(16, lambda i: store.record_completions([completion(f"p{i:02d}")]))
    for index, answer in enumerate(answers):
        assert f"p{index:02d}" in answer[PhaseRun("phase2", RUN)]
    assert len(store.completions(RUN)) == 16


def test_a_submitter_future_resolves_to_the_same_answer(store_factory: Any) -> None:
    """A store with its own writer answers through a future exactly as the direct call."""
    store = store_factory.require(C.COMPLETIONS)
    if not isinstance(store, CompletionSubmitter):
        pytest.skip(f"{store_factory.kind} has no writer of its own")
    futures = [store.submit_completions([completion(f"p{i}")]) for i in range(5)]
    answers = [future.result(timeout=30) for future in futures]
    assert answers[-1] == {PhaseRun("phase2", RUN): {f"p{i}" for i in range(5)}}
    assert len(store.completions(RUN)) == 5


# -- claims ------------------------------------------------------------------------------


def test_only_the_first_claim_wins_and_lands_in_the_outbox(store_factory: Any) -> None:
    """A claim is compare-and-set on the trigger id: the winner's trigger is pending."""
    store = store_factory.require(C.CLAIMS, C.OUTBOX)
    assert store.claim_trigger(trigger()) is True
    assert store.claim_trigger(trigger(at=T0 + timedelta(seconds=1))) is False
    [pending] = store.pending_triggers(T0 + timedelta(hours=1))
    assert pending.trigger == trigger()
    assert (pending.delivered_at, pending.attempts, pending.lease_owner) == (None, 0, None)
    assert store.list_runs() == [RUN]


def test_another_attempt_is_a_separate_claim(store_factory: Any) -> None:
    """Attempt 2 of the same phase-run is claimed on its own id."""
    store = store_factory.require(C.CLAIMS, C.OUTBOX)
    assert store.claim_trigger(trigger()) is True
    assert store.claim_trigger(trigger(attempt=2)) is True
    assert [e.trigger.attempt for e in store.triggers(RUN)] == [1, 2]


def test_concurrent_claims_from_threads_have_exactly_one_winner(store_factory: Any) -> None:
    """20 threads on several handles of one database claiming at once: exactly one wins."""
    first = store_factory.require(C.CLAIMS, C.OUTBOX)
    first.ping()
    handles = [first] + [store_factory.peer(first) for _ in range(4)]
    results = _together(20, lambda i: handles[i % len(handles)].claim_trigger(trigger()))
    assert sorted(results) == [False] * 19 + [True]
    assert len(first.triggers(RUN)) == 1


def test_claims_decided_together_answer_each_trigger_on_its_own(store_factory: Any) -> None:
    """``claim_triggers``: one compare-and-set per trigger, answered in the order asked,
    whether the store decides them in one commit (SQL) or one by one."""
    store = store_factory.require(C.CLAIMS, C.OUTBOX)
    held = trigger(run_key="2026-01-11")
    assert store.claim_trigger(held)
    wanted = [trigger(run_key="2026-01-12"), held, trigger(run_key="2026-01-10", attempt=2)]
    assert claim_triggers(store, wanted) == [True, False, True]
    assert claim_triggers(store, wanted) == [False, False, False]
    assert claim_triggers(store, []) == []
    pending = store.pending_triggers(T0 + timedelta(hours=1))
    assert sorted(e.trigger.trigger_id for e in pending) == sorted(t.trigger_id for t in wanted)
    assert store.list_runs() == ["2026-01-12", "2026-01-11", "2026-01-10"]


def test_a_trigger_asked_twice_in_one_claim_is_won_once_by_its_first(
    store_factory: Any,
) -> None:
    """``claim_triggers`` with the same trigger twice answers as one compare-and-set after
    the other would: the first asking wins it, the second does not (never both, never
    neither); a held one is lost both times."""
    store = store_factory.require(C.CLAIMS, C.OUTBOX)
    fresh, held, other = (
        trigger(run_key="2026-01-12"),
        trigger(run_key="2026-01-11"),
        trigger(run_key="2026-01-13"),
    )
    assert store.claim_trigger(held)
    assert claim_triggers(store, [fresh, held, other, fresh, held]) == [
        True,
        False,
        True,
        False,
        False,
    ]
    pending = store.pending_triggers(T0 + timedelta(hours=1))
    assert sorted(e.trigger.trigger_id for e in pending) == sorted(
        t.trigger_id for t in (fresh, held, other)
    )


def test_concurrent_claims_together_have_exactly_one_winner_each(store_factory: Any) -> None:
    """Eight threads claiming the same five triggers together, in different orders: each
    trigger is won exactly once (no deadlock between the batches on server databases)."""
    first = store_factory.require(C.CLAIMS, C.OUTBOX)
    first.ping()
    handles = [first] + [store_factory.peer(first) for _ in range(3)]
    wanted = [trigger(run_key=f"2026-02-{day:02d}") for day in range(1, 6)]

    def claim(index: int) -> dict[str, bool]:
        order = wanted[index % 5 :] + wanted[: index % 5]
        if index % 2:
            order.reverse()
        answers = claim_triggers(handles[index % len(handles)], order)
        return {t.trigger_id: won for t, won in zip(order, answers, strict=True)}

    results = _together(8, claim)
    for item in wanted:
        assert sum(answer[item.trigger_id] for answer in results) == 1


def test_a_timeout_is_reported_once_per_phase_run(store_factory: Any) -> None:
    """Timeouts are compare-and-set per phase, run key and attempt, even under a race."""
    store = store_factory.require(C.CLAIMS, C.PHASE_LOG)
    report = TimeoutReport("phase2", RUN, T0, T0 + timedelta(hours=2), ("b",))
    results = _together(8, lambda _: store.record_timeout(report))
    assert sorted(results) == [False] * 7 + [True]
    second = TimeoutReport("phase2", RUN, T0, T0 + timedelta(hours=3), ("b",), attempt=2)
    assert store.record_timeout(second) is True
    assert store.timeouts(RUN) == [report, second]
    assert store.timeouts("2026-01-29") == []


# -- lifecycle and the generic fault wrapper ---------------------------------------------


def test_ping_passes_and_close_is_idempotent(store_factory: Any) -> None:
    """A fresh store answers ping; closing twice is harmless."""
    store = store_factory()
    store.ping()
    store.close()
    store.close()
