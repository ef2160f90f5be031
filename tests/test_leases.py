"""Delivery leases: replicas never deliver the same trigger at once; a crashed replica's
lease expires and the trigger goes out again under the same id. Also the replicator's
report of a store that stays behind."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from phasegate.config import loads_pipeline
from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.runtime import Runtime, open_runtime
from phasegate.stores.guarded import StoreRole
from phasegate.stores.memory import MemoryStore
from phasegate.testing import FakeClock, FaultSwitch
from support import RecordingTransport

PIPELINE = loads_pipeline(
    """
[pipeline]
name = "leases"

[[phases]]
name = "a"
processors = ["p"]
next = "b"

[[phases]]
name = "b"
processors = ["q"]
"""
)
RUNS = [f"2026-03-{day:02d}" for day in range(1, 21)]


class SlowTransport(RecordingTransport):
    """Records deliveries, taking a moment each so concurrent passes overlap."""

    def __init__(self, log: list[str], lock: threading.Lock) -> None:
        super().__init__()
        self._log = log
        self._lock = lock

    def deliver(self, trigger: Any) -> None:
        threading.Event().wait(0.002)
        with self._lock:
            self._log.append(trigger.trigger_id)
        super().deliver(trigger)


def replicas(
    clock: FakeClock, count: int, stores: tuple[Any, Any], transports: list[Any]
) -> list[Runtime]:
    return [
        open_runtime(
            PIPELINE,
            clock=clock,
            transport=transports[index],
            rng=random.Random(index),
            stores=stores,
        )
        for index in range(count)
    ]


def test_concurrent_dispatchers_deliver_each_trigger_once(clock: FakeClock) -> None:
    """Three replicas' dispatchers running passes at the same time deliver every trigger
    exactly once between them: each pass delivers only what it leased."""
    stores = (MemoryStore(pipeline="leases", name="primary"), MemoryStore(name="backup"))
    deliveries: list[str] = []
    lock = threading.Lock()
    transports = [SlowTransport(deliveries, lock) for _ in range(3)]
    runtimes = replicas(clock, 3, stores, transports)
    for run_key in RUNS:
        runtimes[0].orchestrator.handle_completion("a", run_key, "p")
    barrier = threading.Barrier(3)

    def dispatch(runtime: Runtime) -> None:
        runtime.dispatcher.batch_size = 3
        barrier.wait()
        while runtime.dispatcher.run_once().delivered:
            pass

    threads = [threading.Thread(target=dispatch, args=(r,)) for r in runtimes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(deliveries) == sorted(
        {e.trigger.trigger_id for r in RUNS for e in runtimes[0].tracker.triggers(r)}
    )
    assert len(deliveries) == len(RUNS)
    assert sum(1 for t in transports if t.delivered) >= 2  # the work was shared


def test_a_crashed_replicas_lease_expires_and_the_trigger_goes_out_again(
    clock: FakeClock,
) -> None:
    """A lease taken by a replica that died is honoured until it expires; then another
    replica delivers the trigger, with the same id."""
    stores = (MemoryStore(pipeline="leases", name="primary"), MemoryStore(name="backup"))
    transports = [RecordingTransport(), RecordingTransport()]
    crashed, survivor = replicas(clock, 2, stores, transports)
    result = crashed.orchestrator.handle_completion("a", RUNS[0], "p")
    [leased] = crashed.dispatcher.lease()  # ... and the process dies before delivering
    assert leased.lease_owner == crashed.dispatcher.owner
    assert survivor.dispatcher.run_once().delivered == ()
    clock.advance(crashed.dispatcher.lease_seconds + 1)
    assert survivor.dispatcher.run_once().delivered == (result.trigger_id,)
    assert [t.trigger_id for t in transports[1].delivered] == [result.trigger_id]
    assert survivor.dispatcher.run_once().delivered == ()


def test_a_failed_delivery_drops_the_lease_and_is_retried_later(clock: FakeClock) -> None:
    """A delivery that fails gives its lease back with a next-attempt time; it is retried
    when that time comes, not before."""
    stores = (MemoryStore(pipeline="leases", name="primary"), MemoryStore(name="backup"))
    transport = RecordingTransport()
    [runtime] = replicas(clock, 1, stores, [transport])
    result = runtime.orchestrator.handle_completion("a", RUNS[0], "p")
    transport.failing = True
    assert runtime.dispatcher.run_once().failed
    [entry] = stores[0].triggers(RUNS[0])
    assert (entry.lease_owner, entry.attempts) == (None, 1)
    transport.failing = False
    assert runtime.dispatcher.run_once().delivered == ()
    clock.advance(runtime.dispatcher.redelivery_base + 1)
    assert runtime.dispatcher.run_once().delivered == (result.trigger_id,)


class PrimaryGoesDown(RecordingTransport):
    """Delivers, and the primary goes down as it does: the mark that follows reaches the
    backup only (the chaos run's primary restarts caught dispatchers there)."""

    def __init__(self, switch: FaultSwitch) -> None:
        super().__init__()
        self.switch = switch

    def deliver(self, trigger: Any) -> None:
        super().deliver(trigger)
        self.switch.fail()


def test_a_mark_the_primary_missed_is_made_there_before_the_lease_runs_out(
    clock: FakeClock,
) -> None:
    """A trigger delivered while the primary went down is marked on the backup only, and
    stays leased on the primary; once the primary answers, the next pass marks it there
    before it leases anything, so no replica delivers it again when the lease expires,
    however long the replicator's catch-up of the outage takes."""
    switch = FaultSwitch(clock)
    stores = (
        switch.wrap(MemoryStore(pipeline="leases", name="primary")),
        MemoryStore(name="backup"),
    )
    transports = [PrimaryGoesDown(switch), RecordingTransport()]
    first, other = replicas(clock, 2, stores, transports)
    result = first.orchestrator.handle_completion("a", RUNS[0], "p")
    assert first.dispatcher.run_once().delivered == (result.trigger_id,)
    [held] = stores[0].inner.triggers(RUNS[0])
    assert held.delivered_at is None
    assert held.lease_owner == first.dispatcher.owner
    [backup] = stores[1].triggers(RUNS[0])
    assert backup.delivered_at is not None
    assert first.tracker.replicator.misses(StoreRole.PRIMARY, RUNS[0])  # not run here

    switch.heal()
    clock.advance(first.tracker.primary_breaker.reset_timeout + 1)  # a trial is due
    first.dispatcher.run_once()
    [held] = stores[0].inner.triggers(RUNS[0])
    assert held.delivered_at == backup.delivered_at
    assert held.lease_owner is None

    clock.advance(first.dispatcher.lease_seconds + 1)
    assert other.dispatcher.run_once().delivered == ()
    assert first.dispatcher.run_once().delivered == ()
    assert [t.trigger_id for t in transports[0].delivered] == [result.trigger_id]
    assert transports[1].delivered == []


def test_marks_owed_to_a_primary_that_stays_down_wait_and_are_kept_in_order(
    clock: FakeClock,
) -> None:
    """While the primary still fails, the owed marks wait (a pass neither raises nor
    loses them); the first pass after it answers makes them, oldest first."""
    switch = FaultSwitch(clock)
    stores = (
        switch.wrap(MemoryStore(pipeline="leases", name="primary")),
        MemoryStore(name="backup"),
    )
    [runtime] = replicas(clock, 1, stores, [PrimaryGoesDown(switch)])
    result = runtime.orchestrator.handle_completion("a", RUNS[0], "p")
    runtime.dispatcher.run_once()
    for _ in range(3):
        clock.advance(runtime.tracker.primary_breaker.reset_timeout + 1)
        assert runtime.dispatcher.run_once().delivered == ()
    [held] = stores[0].inner.triggers(RUNS[0])
    assert held.delivered_at is None
    switch.heal()
    clock.advance(runtime.tracker.primary_breaker.reset_timeout + 1)
    runtime.dispatcher.run_once()
    [held] = stores[0].inner.triggers(RUNS[0])
    assert held.delivered_at is not None
    assert held.trigger.trigger_id == result.trigger_id


@pytest.mark.parametrize("outage_minutes", [2, 6])
def test_a_store_that_stays_behind_is_reported_degraded_once(
    clock: FakeClock, outage_minutes: int
) -> None:
    """STORE_DEGRADED is raised once when the backup has stayed behind for five minutes,
    and resolved once when it has caught up; a shorter outage raises nothing."""
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    switch = FaultSwitch(clock)
    stores = (MemoryStore(pipeline="leases", name="primary"), switch.wrap(MemoryStore()))
    runtime = open_runtime(
        PIPELINE, clock=clock, transport=RecordingTransport(), events=bus, stores=stores
    )
    switch.fail()
    runtime.orchestrator.handle_completion("a", RUNS[0], "p")
    for _ in range(outage_minutes):
        clock.advance(60)
        runtime.tracker.replicator.run_once()
    switch.heal()
    clock.advance(31)
    runtime.tracker.replicator.run_once()
    runtime.tracker.replicator.run_once()
    degraded = [e for e in events if e.kind is EventKind.STORE_DEGRADED]
    if outage_minutes < 5:
        assert degraded == []
    else:
        assert [e.severity for e in degraded] == [Severity.WARNING, Severity.RESOLVED]
        assert "backup store has missed writes of 1 run(s)" in degraded[0].message
