"""Dual-write scenarios A–D of SPEC §3, with faults injected into real stores and a fake clock,
on every backend that can be both stores: the in-memory store and Firestore (faults by the
generic wrapper), SQLite and PostgreSQL (faults at the driver level)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from phasegate.errors import BothStoresFailed, StoreError, TransientStoreError
from phasegate.model import Completion, Status, Trigger, TriggerReason, trigger_id_for
from phasegate.resilience import BreakerState
from phasegate.stores import Capability, MemoryStore, open_store
from phasegate.stores.sql import SqlStore
from phasegate.testing import FakeClock, FaultSwitch
from phasegate.tracker import ClaimPolicy, CompletionTracker, StoreRole
from store_databases import url_maker

BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    "firestore",
]

RUN = "2026-01-28"


def report(processor: str = "bdl_boxscores", status: Status = Status.SUCCESS) -> Completion:
    return Completion(
        phase="phase2",
        run_key=RUN,
        processor=processor,
        status=status,
        occurred_at=datetime(2026, 1, 28, 6, tzinfo=UTC),
    )


class Rig:
    """Two real stores, a fault switch on each, and a tracker over them."""

    def __init__(
        self, make_store: Any, clock: FakeClock, claim_policy: ClaimPolicy = ClaimPolicy.DEFER
    ) -> None:
        self.clock = clock
        self.primary_fault = FaultSwitch(clock)
        self.backup_fault = FaultSwitch(clock)
        self.primary = make_store("primary", self.primary_fault)
        self.backup = make_store("backup", self.backup_fault)
        self.tracker = CompletionTracker(
            self.primary,
            self.backup,
            clock=clock,
            rng=random.Random(1),
            claim_policy=claim_policy,
        )

    def held(self, store: Any) -> list[str]:
        return [c.processor for c in store.completions(RUN)]


@pytest.fixture(params=BACKENDS)
def stores(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str, FaultSwitch], Any]]:
    """``stores(label, switch)``: a fresh store of the backend, failing when ``switch`` is on."""
    backend: str = request.param
    cleanups: list[Callable[[], None]] = []
    opened: list[Any] = []

    def make(label: str, switch: FaultSwitch) -> Any:
        if backend == "memory":
            store: Any = switch.wrap(MemoryStore(pipeline="test-pipeline", name=label))
        elif backend == "firestore":
            emulator = request.getfixturevalue("firestore_emulator")
            request.getfixturevalue("monkeypatch").setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
            url = f"firestore://phasegate-test?prefix=tr{uuid.uuid4().hex[:16]}"
            store = switch.wrap(open_store(url, pipeline="test-pipeline", name=label))
        else:
            url = url_maker(backend, tmp_path_factory, cleanups)(label)
            store = SqlStore(url, pipeline="test-pipeline", name=label)
            switch.attach(store)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
    for cleanup in cleanups:
        cleanup()


@pytest.fixture
def rig(stores: Any, clock: FakeClock) -> Rig:
    return Rig(stores, clock)


def warnings_and_worse(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name == "phasegate.tracker"
    ]


def test_scenario_a_primary_down_backup_up(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """A: (False, True), WARNING "using backup", only the backup holds it, the breaker opens."""
    rig.primary_fault.fail()
    result = rig.tracker.record_completion(report())
    assert tuple(result) == (False, True)
    [(level, message)] = warnings_and_worse(caplog)
    assert level == "WARNING"
    assert "primary store failed, using backup" in message
    assert len(rig.clock.sleeps) == 2  # three attempts on the primary
    assert rig.tracker.primary_breaker.state is BreakerState.OPEN
    second = rig.tracker.record_completion(report("nbac_gamebook"))
    assert tuple(second) == (False, True)
    assert len(rig.clock.sleeps) == 2  # skipped: the breaker is open
    rig.primary_fault.heal()
    assert rig.held(rig.primary) == []
    assert rig.held(rig.backup) == ["bdl_boxscores", "nbac_gamebook"]
    assert rig.tracker.missed_run_keys(StoreRole.PRIMARY) == {RUN}


def test_scenario_a_the_replicator_catches_the_primary_up_off_the_request_path(rig: Rig) -> None:
    """After the outage a write closes the breaker without replaying anything on the request
    thread; the replicator copies what the primary missed in the background."""
    rig.primary_fault.fail()
    rig.tracker.record_completion(report("bdl_boxscores"))
    rig.primary_fault.heal()
    rig.clock.advance(30)
    assert tuple(rig.tracker.record_completion(report("odds_api_props"))) == (True, True)
    assert rig.tracker.primary_breaker.state is BreakerState.CLOSED
    assert rig.held(rig.primary) == ["odds_api_props"]
    assert rig.tracker.missed_run_keys(StoreRole.PRIMARY) == {RUN}
    still_missed = rig.tracker.replicator.run_once()
    assert still_missed[StoreRole.PRIMARY] == frozenset()
    assert rig.held(rig.primary) == ["bdl_boxscores", "odds_api_props"]
    assert rig.tracker.counts()["replayed.primary"] == 1


def test_a_long_outage_is_caught_up_fifty_run_keys_at_a_time(rig: Rig) -> None:
    """120 run keys the primary missed are copied in chunks of 50: three imports, not 120.
    A chunk whose import fails stays missed, with every chunk after it; the next pass
    brings them over."""
    keys = [f"2026-03-{day:03d}" for day in range(120)]
    rig.primary_fault.fail()
    rig.tracker.record_completions([dataclasses.replace(report(), run_key=k) for k in keys])
    rig.primary_fault.heal()
    assert rig.tracker.missed_run_keys(StoreRole.PRIMARY) == set(keys)
    imported: list[frozenset[str]] = []
    real_import = rig.primary.import_records

    def counted(records: Any) -> None:
        imported.append(records.run_keys)
        if len(imported) == 2:
            raise StoreError("the second import fails")
        real_import(records)

    rig.primary.import_records = counted
    left = rig.tracker.replicator.run_once(force=True)[StoreRole.PRIMARY]
    assert imported == [frozenset(keys[:50]), frozenset(keys[50:100])]
    assert left == set(keys[50:])
    assert rig.tracker.replicator.run_once(force=True)[StoreRole.PRIMARY] == frozenset()
    assert imported[2:] == [frozenset(keys[50:100]), frozenset(keys[100:])]
    assert all(len(rig.primary.completions(key)) == 1 for key in keys)


def test_the_replicator_waits_while_the_missing_store_is_still_down(rig: Rig) -> None:
    """A catch-up pass against a store that is still failing keeps the run key missed."""
    rig.primary_fault.fail()
    rig.tracker.record_completion(report("bdl_boxscores"))
    rig.clock.advance(30)
    assert rig.tracker.replicator.run_once()[StoreRole.PRIMARY] == {RUN}
    rig.primary_fault.heal()
    rig.clock.advance(30)
    assert rig.tracker.replicator.run_once()[StoreRole.PRIMARY] == frozenset()
    assert rig.held(rig.primary) == ["bdl_boxscores"]


def test_scenario_b_backup_down_primary_up(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """B: (True, False), WARNING about the backup, only the primary holds it."""
    rig.backup_fault.fail()
    result = rig.tracker.record_completion(report())
    assert tuple(result) == (True, False)
    [(level, message)] = warnings_and_worse(caplog)
    assert level == "WARNING"
    assert "backup store failed" in message
    rig.backup_fault.heal()
    assert rig.held(rig.primary) == ["bdl_boxscores"]
    assert rig.held(rig.backup) == []
    assert rig.tracker.backup_breaker.state is BreakerState.OPEN


def test_scenario_c_both_down(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """C: nothing acknowledged (BothStoresFailed), CRITICAL logged, neither store holds it."""
    rig.primary_fault.fail()
    rig.backup_fault.fail()
    with pytest.raises(BothStoresFailed) as info:
        rig.tracker.record_completion(report())
    assert info.value.primary is not None
    assert info.value.backup is not None
    [(level, message)] = warnings_and_worse(caplog)
    assert level == "CRITICAL"
    assert "both stores failed" in message
    rig.primary_fault.heal()
    rig.backup_fault.heal()
    assert rig.held(rig.primary) == []
    assert rig.held(rig.backup) == []
    assert rig.tracker.counts()["both_failed"] == 1


def test_scenario_d_a_three_second_primary_outage_is_absorbed(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """D: retries ride out a 3 s outage: (True, True), no warning, breaker still closed."""
    rig.primary_fault.fail(seconds=3.0)
    result = rig.tracker.record_completion(report())
    assert tuple(result) == (True, True)
    assert warnings_and_worse(caplog) == []
    assert rig.tracker.primary_breaker.state is BreakerState.CLOSED
    assert rig.tracker.counts()["retries.primary"] == 2
    assert sum(rig.clock.sleeps) >= 3.0
    assert rig.held(rig.primary) == rig.held(rig.backup) == ["bdl_boxscores"]


def test_the_event_loop_path_answers_as_the_threaded_one_retries_included(rig: Rig) -> None:
    """arecord_completions (the service's path) awaits both stores' writes at once: a
    clean write, a 3 s primary outage ridden out by retries, and a primary down for
    good answer exactly as record_completions does in scenarios D and A."""
    clean = asyncio.run(rig.tracker.arecord_completions([report("a")]))
    assert tuple(clean) == (True, True)
    rig.primary_fault.fail(seconds=3.0)
    absorbed = asyncio.run(rig.tracker.arecord_completions([report("b")]))
    assert tuple(absorbed) == (True, True)
    assert rig.tracker.counts()["retries.primary"] == 2
    rig.primary_fault.fail()
    down = asyncio.run(rig.tracker.arecord_completions([report("c")]))
    assert tuple(down) == (False, True)
    assert isinstance(down.primary_error, TransientStoreError)
    rig.primary_fault.heal()
    assert rig.held(rig.primary) == ["a", "b"]
    assert rig.held(rig.backup) == ["a", "b", "c"]
    assert down.successes() == {report("c").phase_run: frozenset({"a", "b", "c"})}


def test_reads_merge_both_stores_so_a_record_in_either_counts(rig: Rig) -> None:
    """A success only the backup saw and a failure only the primary saw merge to success."""
    rig.primary.record_completions([report("a", Status.FAILED)])
    rig.backup.record_completions([report("a", Status.SUCCESS), report("b")])
    merged = rig.tracker.completions(RUN)
    assert [(c.processor, c.status) for c in merged] == [
        ("a", Status.SUCCESS),
        ("b", Status.SUCCESS),
    ]
    rig.primary_fault.fail()
    assert [c.processor for c in rig.tracker.completions(RUN)] == ["a", "b"]


def a_trigger(rig: Rig) -> Trigger:
    return Trigger(
        trigger_id=trigger_id_for("test-pipeline", "phase2", RUN),
        pipeline="test-pipeline",
        phase="phase2",
        next_phase="phase3",
        run_key=RUN,
        reason=TriggerReason.COMPLETE,
        triggered_at=rig.clock.now(),
    )


def test_by_default_a_claim_waits_for_the_primary(rig: Rig) -> None:
    """claim_fallback = "defer": during a primary outage nothing is claimed, not even on the
    backup; once the primary answers, it decides the claim, once."""
    trigger = a_trigger(rig)
    rig.primary_fault.fail()
    outcome = rig.tracker.claim_trigger(trigger)
    assert outcome.deferred
    assert (outcome.won, outcome.claimed_on) == (False, None)
    assert rig.backup.triggers(RUN) == []
    rig.primary_fault.heal()
    rig.clock.advance(30)
    assert (rig.tracker.claim_trigger(trigger).won, rig.tracker.claim_trigger(trigger).won) == (
        True,
        False,
    )
    assert [e.trigger.trigger_id for e in rig.backup.triggers(RUN)] == [trigger.trigger_id]


def test_with_the_backup_policy_a_claim_falls_back_to_the_backup_and_is_replayed(
    stores: Any, clock: FakeClock
) -> None:
    """claim_fallback = "backup": the backup takes the claim during a primary outage; the
    replicator copies it to the primary on recovery."""
    rig = Rig(stores, clock, claim_policy=ClaimPolicy.BACKUP)
    trigger = a_trigger(rig)
    rig.primary_fault.fail()
    outcome = rig.tracker.claim_trigger(trigger)
    assert (outcome.won, outcome.claimed_on) == (True, StoreRole.BACKUP)
    assert rig.tracker.claim_trigger(trigger).won is False
    rig.primary_fault.heal()
    rig.clock.advance(30)
    rig.tracker.replicator.run_once()
    assert [e.trigger.trigger_id for e in rig.primary.triggers(RUN)] == [trigger.trigger_id]
    assert rig.tracker.claim_trigger(trigger).won is False


def test_a_programming_error_is_not_retried_and_escapes(rig: Rig) -> None:
    """A bug in the caller is raised at once, not retried, and does not trip a breaker."""
    calls = []

    def broken(store: Any) -> None:
        calls.append(store)
        raise TypeError("bad argument")

    with pytest.raises(TypeError):
        rig.tracker.dual_write("broken", [RUN], broken, Capability.COMPLETIONS)
    assert sorted(store.name for store in calls) == ["backup", "primary"]  # once each
    assert rig.tracker.primary_breaker.state is BreakerState.CLOSED


def test_a_miss_noted_again_during_its_catch_up_is_not_forgotten(harness: Any) -> None:
    """The replicator copies a run key the primary missed; meanwhile the primary misses
    another write of that run key. The catch-up's copy may predate that write, so the
    run key stays missed, and the next catch-up brings the write over."""
    tracker = harness.tracker
    tracker.replicator.stop()
    run = "2026-01-28"
    harness.primary_fault.fail()
    harness.complete("extract", "api")  # the backup only
    harness.primary_fault.heal()
    assert tracker.missed_run_keys(StoreRole.PRIMARY) == {run}
    exported, go_on = threading.Event(), threading.Event()
    # The export the catch-up uses: of many run keys at once where the store has one.
    export = "export_runs" if hasattr(tracker.backup, "export_runs") else "export_records"
    real_export = getattr(tracker.backup, export)

    def held_export(*args: Any) -> Any:
        records = real_export(*args)
        exported.set()
        go_on.wait(10)
        return records

    setattr(tracker.backup, export, held_export)
    catching_up = threading.Thread(target=tracker.resync)
    catching_up.start()
    assert exported.wait(10)
    harness.primary_fault.fail()
    harness.complete("extract", "files")  # the backup only, after the export
    harness.primary_fault.heal()
    go_on.set()
    catching_up.join(10)
    assert tracker.missed_run_keys(StoreRole.PRIMARY) == {run}
    setattr(tracker.backup, export, real_export)
    tracker.resync()
    assert {c.processor for c in tracker.primary.completions(run)} == {"api", "files"}
    assert tracker.missed_run_keys(StoreRole.PRIMARY) == frozenset()
