"""The store contract, continued: the outbox and its leases, the phase log, replication,
and the generic fault wrapper, against every backend of ``store_factory``."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from phasegate.errors import TransientStoreError
from phasegate.model import (
    OutboxEntry,
    PhaseExecution,
    RecordSet,
    Status,
    TimeoutReport,
    TriggerReason,
)
from phasegate.stores.base import (
    Capability,
    export_runs,
    mark_delivered,
    merged_records,
    record_phase_executions,
)
from phasegate.testing import FaultSwitch
from store_records import RUN, T0, completion, trigger

C = Capability
LATER = T0 + timedelta(minutes=1)


def _claimed(store: Any, count: int = 1) -> list[str]:
    ids = []
    for index in range(count):
        item = trigger(run_key=f"2026-01-{10 + index:02d}", at=T0 + timedelta(seconds=index))
        assert store.claim_trigger(item)
        ids.append(item.trigger_id)
    return ids


def test_delivery_failures_defer_and_delivery_is_final(store_factory: Any) -> None:
    """A failed delivery is counted and deferred; a delivered trigger is never pending again."""
    store = store_factory.require(C.CLAIMS, C.OUTBOX)
    store.claim_trigger(trigger())
    store.record_delivery_failure(trigger().trigger_id, "HTTP 503", LATER)
    assert store.pending_triggers(T0 + timedelta(seconds=30)) == []
    [entry] = store.pending_triggers(LATER)
    assert (entry.attempts, entry.last_error, entry.next_attempt_at) == (1, "HTTP 503", LATER)
    store.mark_delivered(trigger().trigger_id, LATER)
    store.mark_delivered(trigger().trigger_id, LATER + timedelta(seconds=5))
    store.record_delivery_failure(trigger().trigger_id, "late", LATER + timedelta(days=1))
    assert store.pending_triggers(LATER + timedelta(days=2)) == []
    [entry] = store.triggers(RUN)
    assert (entry.delivered_at, entry.attempts, entry.last_error) == (LATER, 1, None)


def test_pending_triggers_are_oldest_first_and_limited(store_factory: Any) -> None:
    """Pending entries come oldest claim first, capped at ``limit``."""
    store = store_factory.require(C.CLAIMS, C.OUTBOX)
    ids = _claimed(store, 3)
    due = T0 + timedelta(hours=1)
    assert [e.trigger.trigger_id for e in store.pending_triggers(due)] == ids
    assert [e.trigger.trigger_id for e in store.pending_triggers(due, limit=2)] == ids[:2]


def test_a_lease_is_exclusive_until_it_expires(store_factory: Any) -> None:
    """A leased trigger is hidden from other owners and from pending until its lease ends."""
    store = store_factory.require(C.CLAIMS, C.OUTBOX)
    [trigger_id] = _claimed(store)
    until = T0 + timedelta(seconds=30)
    [leased] = store.lease_triggers("a", T0, until)
    assert (leased.trigger.trigger_id, leased.lease_owner, leased.lease_expires_at) == (
        trigger_id,
        "a",
        until,
    )
    assert leased.expired_lease_owner is None
    assert store.lease_triggers("b", T0 + timedelta(seconds=29), T0 + timedelta(minutes=5)) == []
    assert store.pending_triggers(T0 + timedelta(seconds=29)) == []
    [taken] = store.lease_triggers("b", until, until + timedelta(seconds=30))
    assert (taken.lease_owner, taken.expired_lease_owner) == ("b", "a")
    [stored] = store.triggers("2026-01-10")
    assert (stored.lease_owner, stored.expired_lease_owner) == ("b", None)


def test_an_owner_taking_back_its_own_expired_lease_names_no_dead_owner(
    store_factory: Any,
) -> None:
    """Only another owner's expired lease is a trace of a crash; one's own is not."""
    store = store_factory.require(C.CLAIMS, C.OUTBOX)
    _claimed(store)
    until = T0 + timedelta(seconds=30)
    store.lease_triggers("a", T0, until)
    [again] = store.lease_triggers("a", until, until + timedelta(seconds=30))
    assert (again.lease_owner, again.expired_lease_owner) == ("a", None)


@pytest.mark.parametrize("outcome", ["delivered", "failed"])
def test_delivery_outcomes_drop_the_lease(store_factory: Any, outcome: str) -> None:
    """Marking delivered or failed releases the lease on the entry."""
    store = store_factory.require(C.CLAIMS, C.OUTBOX)
    [trigger_id] = _claimed(store)
    store.lease_triggers("a", T0, T0 + timedelta(minutes=5))
    if outcome == "delivered":
        store.mark_delivered(trigger_id, LATER)
    else:
        store.record_delivery_failure(trigger_id, "boom", LATER)
        assert [e.lease_owner for e in store.pending_triggers(LATER)] == [None]
    [entry] = store.triggers("2026-01-10")
    assert (entry.lease_owner, entry.lease_expires_at) == (None, None)


def test_several_triggers_marked_delivered_together(store_factory: Any) -> None:
    """``mark_delivered`` over several ids marks each, drops its lease, and leaves a
    trigger already delivered as it was."""
    store = store_factory.require(C.CLAIMS, C.OUTBOX)
    ids = _claimed(store, 3)
    store.mark_delivered(ids[0], T0)
    store.lease_triggers("a", T0, T0 + timedelta(minutes=5))
    mark_delivered(store, ids, LATER)
    mark_delivered(store, [], LATER)
    entries = {
        e.trigger.trigger_id: e
        for key in ("2026-01-10", "2026-01-11", "2026-01-12")
        for e in store.triggers(key)
    }
    assert [entries[i].delivered_at for i in ids] == [T0, LATER, LATER]
    assert {(e.lease_owner, e.lease_expires_at) for e in entries.values()} == {(None, None)}
    assert store.pending_triggers(LATER + timedelta(days=1)) == []


def test_concurrent_dispatchers_never_lease_the_same_trigger(store_factory: Any) -> None:
    """Eight owners on several handles lease at once: disjoint sets; with one more pass,
    every trigger."""
    store = store_factory.require(C.CLAIMS, C.OUTBOX)
    ids = _claimed(store, 12)
    handles = [store] + [store_factory.peer(store) for _ in range(3)]
    barrier = threading.Barrier(8)
    leased: dict[str, list[str]] = {}

    def lease(index: int) -> None:
        barrier.wait()
        got = handles[index % 4].lease_triggers(f"o{index}", LATER, LATER + timedelta(1), 3)
        leased[f"o{index}"] = [e.trigger.trigger_id for e in got]

    threads = [threading.Thread(target=lease, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [trigger_id for got in leased.values() for trigger_id in got]
    assert len(every) == len(set(every))  # never the same trigger to two owners
    # A store may lease fewer than asked while contended; the next pass takes the rest.
    rest = store.lease_triggers("late", LATER, LATER + timedelta(1), 12)
    assert sorted(every + [e.trigger.trigger_id for e in rest]) == sorted(ids)


# -- the phase log -----------------------------------------------------------------------


def _execution(
    phase: str = "phase2", run_key: str = RUN, attempt: int = 1, minutes: int = 42
) -> PhaseExecution:
    return PhaseExecution(
        phase=phase,
        run_key=run_key,
        started_at=T0,
        triggered_at=T0 + timedelta(minutes=minutes),
        processors=("a", "b"),
        reason=TriggerReason.COMPLETE,
        trigger_id=trigger(run_key, phase, attempt=attempt).trigger_id,
        attempt=attempt,
    )


def test_phase_executions_are_kept_once_per_phase_run_newest_first(store_factory: Any) -> None:
    """Executions are idempotent per phase, run and attempt, and filter by phase and run."""
    store = store_factory.require(C.PHASE_LOG)
    first, retry = _execution(), _execution(attempt=2, minutes=50)
    other = _execution("phase3", "2026-01-29", minutes=10)
    for execution in (first, first, replace(first, processors=("z",)), retry, other):
        store.record_phase_execution(execution)
    assert store.phase_executions() == [retry, first, other]
    assert store.phase_executions("phase2", limit=1) == [retry]
    assert store.phase_executions(run_key="2026-01-29") == [other]
    assert store.phase_executions("phase4") == []
    assert first.duration_seconds == 42 * 60


def test_phase_executions_kept_together_are_kept_as_one_by_one(store_factory: Any) -> None:
    """``record_phase_executions`` is idempotent per phase-run, like single records."""
    store = store_factory.require(C.PHASE_LOG)
    first, retry = _execution(), _execution(attempt=2, minutes=50)
    other = _execution("phase3", "2026-01-29", minutes=10)
    record_phase_executions(store, [first, retry])
    record_phase_executions(store, [replace(first, processors=("z",)), other, retry])
    record_phase_executions(store, [])
    assert store.phase_executions() == [retry, first, other]


# -- replication -------------------------------------------------------------------------


def _everything(store: Any) -> RecordSet:
    store.record_completions([completion("a"), completion("b", Status.FAILED)])
    store.record_completions([completion("b", at=LATER), completion("c", attempt=2)])
    store.record_completions([completion("a", run_key="2026-02-01")])
    store.claim_trigger(trigger())
    store.mark_delivered(trigger().trigger_id, T0 + timedelta(minutes=2))
    store.claim_trigger(trigger(attempt=2))
    store.record_delivery_failure(trigger(attempt=2).trigger_id, "503", LATER)
    store.record_phase_execution(_execution())
    store.record_timeout(TimeoutReport("phase3", RUN, T0, T0, ("x",), attempt=3))
    return store.export_records("2026-01-01", "2026-01-31")


def _normalised(records: RecordSet) -> tuple[Any, ...]:
    return (
        sorted(records.completions, key=lambda c: c.key),
        sorted(records.history, key=lambda c: (c.key, c.occurred_at)),
        sorted(records.triggers, key=lambda e: e.trigger.trigger_id),
        sorted(records.executions, key=lambda e: (e.phase, e.run_key, e.attempt)),
        sorted(records.timeouts, key=lambda t: (t.phase, t.run_key, t.attempt)),
    )


def test_export_then_import_copies_a_range_idempotently(store_factory: Any) -> None:
    """Importing an export twice yields exactly the source's records in that range."""
    store_factory.require(C.REPLICATION, C.COMPLETIONS, C.CLAIMS, C.OUTBOX, C.PHASE_LOG)
    source, target = store_factory("source"), store_factory("target")
    exported = _everything(source)
    assert exported.run_keys == {RUN}
    assert (len(exported.completions), len(exported.history), len(exported.triggers)) == (3, 4, 2)
    target.import_records(exported)
    target.import_records(exported)
    assert _normalised(target.export_records("2026-01-01", "2026-01-31")) == _normalised(exported)
    assert target.export_records("2026-02-01", "2026-02-28") == RecordSet()
    assert target.list_runs() == [RUN]


def test_an_export_of_run_keys_holds_theirs_and_nothing_between(store_factory: Any) -> None:
    """``export_runs``: every record of the run keys asked for, as their own exports hold
    them, and none of a run key between them that was not asked for."""
    store = store_factory.require(C.REPLICATION, C.COMPLETIONS, C.CLAIMS, C.OUTBOX, C.PHASE_LOG)
    _everything(store)
    store.record_completions([completion("a", run_key="2026-01-30")])
    asked = ["2026-02-01", RUN, "2026-03-01"]
    found = export_runs(store, asked)
    assert found.run_keys == {RUN, "2026-02-01"}
    each = merged_records(store.export_records(key, key) for key in asked)
    assert _normalised(found) == _normalised(each)
    assert export_runs(store, []) == RecordSet()


def test_import_lets_success_win_and_delivery_stick(store_factory: Any) -> None:
    """A merged success upgrades a failure; a merged delivery sticks; neither is undone."""
    store = store_factory.require(C.REPLICATION, C.COMPLETIONS, C.CLAIMS, C.OUTBOX)
    store.record_completions([completion(status=Status.FAILED, at=T0 + timedelta(hours=1))])
    store.claim_trigger(trigger())
    delivered = OutboxEntry(trigger=trigger(), claimed_at=T0, delivered_at=LATER)
    store.import_records(RecordSet(completions=(completion(),), triggers=(delivered,)))
    assert store.completions(RUN)[0].status is Status.SUCCESS
    assert store.triggers(RUN)[0].delivered_at == LATER
    undelivered = OutboxEntry(trigger=trigger(), claimed_at=T0, attempts=5, last_error="x")
    stale = completion(status=Status.FAILED, at=T0 + timedelta(days=1))
    store.import_records(RecordSet(completions=(stale,), triggers=(undelivered,)))
    assert store.completions(RUN)[0].status is Status.SUCCESS
    assert (store.triggers(RUN)[0].delivered_at, store.triggers(RUN)[0].attempts) == (LATER, 0)


def test_import_keeps_held_claims_and_timeouts_and_never_copies_a_lease(
    store_factory: Any,
) -> None:
    """More attempts win among undelivered copies; a held timeout stays; leases stay home."""
    store = store_factory.require(C.REPLICATION, C.CLAIMS, C.OUTBOX, C.PHASE_LOG)
    store.claim_trigger(trigger())
    store.record_delivery_failure(trigger().trigger_id, "first", LATER)
    held = TimeoutReport("phase2", RUN, T0, T0, ("a",))
    store.record_timeout(held)
    copy = OutboxEntry(
        trigger=trigger(),
        claimed_at=T0,
        attempts=3,
        last_error="third",
        next_attempt_at=LATER,
        lease_owner="elsewhere",
        lease_expires_at=LATER + timedelta(days=1),
    )
    fewer = replace(copy, attempts=0, last_error=None)
    store.import_records(
        RecordSet(triggers=(copy, fewer), timeouts=(replace(held, missing=("zzz",)),))
    )
    [entry] = store.triggers(RUN)
    assert (entry.attempts, entry.last_error, entry.lease_owner) == (3, "third", None)
    assert store.timeouts(RUN) == [held]
    assert [e.trigger.trigger_id for e in store.pending_triggers(LATER)] == [trigger().trigger_id]


def test_one_import_of_new_and_held_entries_merges_each_on_its_own(store_factory: Any) -> None:
    """Copies of held and of new triggers in one import: each new one is added as copied,
    each held one merged by the rules, whatever the others in the import are."""
    store = store_factory.require(C.REPLICATION, C.CLAIMS, C.OUTBOX)
    held = [trigger(run_key="2026-01-10"), trigger(run_key="2026-01-12")]
    for claimed in held:
        assert store.claim_trigger(claimed)
    copies = (
        OutboxEntry(trigger=held[0], claimed_at=T0, delivered_at=LATER),
        OutboxEntry(trigger=trigger(run_key="2026-01-11"), claimed_at=T0, attempts=2),
        OutboxEntry(trigger=held[1], claimed_at=T0),
        OutboxEntry(
            trigger=trigger(run_key="2026-01-13"), claimed_at=T0, delivered_at=LATER, attempts=1
        ),
    )
    store.import_records(RecordSet(triggers=copies))
    keys = [f"2026-01-{day}" for day in (10, 11, 12, 13)]
    found = {
        key: [(e.trigger, e.delivered_at, e.attempts) for e in store.triggers(key)] for key in keys
    }
    assert found == {
        "2026-01-10": [(held[0], LATER, 0)],
        "2026-01-11": [(trigger(run_key="2026-01-11"), None, 2)],
        "2026-01-12": [(held[1], None, 0)],
        "2026-01-13": [(trigger(run_key="2026-01-13"), LATER, 1)],
    }
    assert sorted(store.list_runs()) == keys


# -- the generic fault wrapper -----------------------------------------------------------


def test_a_faulty_store_fails_every_call_transiently_while_switched_on(
    store_factory: Any,
) -> None:
    """While the switch is on, calls raise TransientStoreError and never reach the store."""
    store = store_factory()
    switch = FaultSwitch()
    faulty = switch.wrap(store)
    assert (faulty.name, faulty.capabilities) == (store.name, store.capabilities)
    faulty.ping()
    switch.fail()
    for call in (faulty.ping, faulty.list_runs, lambda: faulty.claim_trigger(trigger())):
        with pytest.raises(TransientStoreError):
            call()
    assert switch.failures == 3
    switch.heal()
    if C.CLAIMS in store.capabilities:
        assert faulty.claim_trigger(trigger()) is True
    if C.COMPLETIONS in store.capabilities:
        faulty.record_completions([completion()])
        assert faulty.list_runs() == [RUN]


def test_a_faulty_store_heals_after_the_fault_window(store_factory: Any, clock: Any) -> None:
    """``fail(seconds)`` fails calls for that long on the injected clock, then lets them pass."""
    store = store_factory()
    switch = FaultSwitch(clock)
    faulty = switch.wrap(store)
    switch.fail(5)
    with pytest.raises(TransientStoreError):
        faulty.ping()
    clock.advance(5)
    faulty.ping()
    assert switch.failures == 1


def test_a_faulty_submitter_fails_through_its_future(store_factory: Any) -> None:
    """A wrapped store with a writer reports the fault through the returned future."""
    store = store_factory()
    if not hasattr(store, "submit_completions"):
        pytest.skip(f"{store_factory.kind} has no writer of its own")
    switch = FaultSwitch()
    faulty = switch.wrap(store)
    switch.fail()
    future = faulty.submit_completions([completion()])
    with pytest.raises(TransientStoreError):
        future.result(timeout=0)
    switch.heal()
    assert faulty.submit_completions([completion()]).result(timeout=30)
