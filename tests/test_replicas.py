"""Several orchestrator replicas sharing two stores, with the primary stopped mid-run."""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from phasegate.config import loads_pipeline
from phasegate.errors import BothStoresFailed
from phasegate.events import Event, EventBus, EventKind
from phasegate.reconcile import reconcile
from phasegate.runtime import Runtime, open_runtime
from phasegate.stores.memory import MemoryStore
from phasegate.stores.sql import SqlStore
from phasegate.testing import FakeClock, FaultSwitch
from support import RecordingTransport

PIPELINE = """
[pipeline]
name = "replicas"

[[phases]]
name = "a"
processors = ["p1", "p2", "p3"]
next = "b"

[[phases]]
name = "b"
processors = ["q1", "q2"]
"""
RUNS = [f"2026-02-{day:02d}" for day in range(1, 11)]
REPORTS = [(phase, p) for phase, ps in (("a", ("p1", "p2", "p3")), ("b", ("q1", "q2"))) for p in ps]


class Replicas:
    """N runtimes on the same two stores; one switch stops the primary for all of them."""

    def __init__(self, backend: str, tmp_path: Path, policy: str, count: int = 3) -> None:
        self.clock = FakeClock()
        self.primary_fault = FaultSwitch(self.clock)
        self.events: list[Event] = []
        self._lock = threading.Lock()
        pipeline = loads_pipeline(PIPELINE + f'\n[resilience]\nclaim_fallback = "{policy}"\n')
        shared = (MemoryStore(pipeline="replicas", name="primary"), MemoryStore(name="backup"))
        self.runtimes: list[Runtime] = []
        for _ in range(count):
            if backend == "memory":
                primary: Any = self.primary_fault.wrap(shared[0])
                backup: Any = shared[1]
            else:
                primary = SqlStore(
                    f"sqlite:///{tmp_path}/p.db", pipeline="replicas", name="primary"
                )
                backup = SqlStore(f"sqlite:///{tmp_path}/b.db", pipeline="replicas", name="backup")
                self.primary_fault.attach(primary)
            bus = EventBus()
            bus.subscribe(self._record)
            self.runtimes.append(
                open_runtime(
                    pipeline,
                    clock=self.clock,
                    transport=RecordingTransport(),
                    events=bus,
                    rng=random.Random(len(self.runtimes)),
                    stores=(primary, backup),
                )
            )

    def _record(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def claims(self) -> Counter[tuple[str, str]]:
        return Counter(
            (e.phase or "", e.run_key or "")
            for e in self.events
            if e.kind is EventKind.TRIGGER_CLAIMED
        )

    def report(self, rng: random.Random, phase: str, processor: str, run_key: str) -> None:
        """Report until acknowledged, to random replicas, as a processor retrying would."""
        while True:
            runtime = rng.choice(self.runtimes)
            try:
                runtime.orchestrator.handle_completion(phase, run_key, processor)
                return
            except BothStoresFailed:
                continue

    def close(self) -> None:
        for runtime in self.runtimes:
            runtime.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_default_policy_never_double_claims_across_replicas_during_a_primary_outage(
    backend: str, tmp_path: Path
) -> None:
    """Three replicas, every report three times to random replicas, the primary stopped for
    the middle of the run: zero double claims, and every phase-run is triggered once the
    primary is back and caught up."""
    rig = Replicas(backend, tmp_path, "defer")
    rng = random.Random(7)
    work = [(phase, p, run) for run in RUNS for phase, p in REPORTS] * 3
    rng.shuffle(work)
    third = len(work) // 3
    try:

        def send(chunk: list[tuple[str, str, str]], seed: int) -> None:
            local = random.Random(seed)
            for phase, processor, run_key in chunk:
                rig.report(local, phase, processor, run_key)

        def in_threads(chunk: list[tuple[str, str, str]]) -> None:
            threads = [threading.Thread(target=send, args=(chunk[i::4], i)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)

        in_threads(work[:third])
        rig.primary_fault.fail()  # the primary stops hard, for every replica at once
        in_threads(work[third : 2 * third])
        rig.primary_fault.heal()
        rig.clock.advance(31)  # each breaker lets a trial through again
        in_threads(work[2 * third :])
        for runtime in rig.runtimes:
            runtime.tracker.resync()
        for runtime in rig.runtimes:
            runtime.orchestrator.sweep()
        claims = rig.claims()
        expected = {(phase, run) for run in RUNS for phase in ("a", "b")}
        assert set(claims) == expected
        assert all(count == 1 for count in claims.values()), claims
        report = reconcile(rig.runtimes[0].tracker.primary, rig.runtimes[0].tracker.backup)
        assert not report.double_claims
    finally:
        rig.close()
