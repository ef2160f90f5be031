"""A runtime on two in-memory stores: the stores that already keep attempts apart.

The SQL store keys completions and claims by phase and run key alone until its
schema gains the attempt; reruns are tested here on the in-memory store, which the
store contract holds to the same behaviour.
"""

from __future__ import annotations

import random
from typing import Any

from phasegate.config import loads_pipeline
from phasegate.events import Event, EventBus, EventKind
from phasegate.runtime import open_runtime
from phasegate.stores.memory import MemoryStore
from phasegate.testing import FakeClock
from support import PIPELINE_TEXT, RecordingTransport


class MemoryRig:
    """Like ``support.Harness``, on in-memory primary and backup stores."""

    def __init__(self, clock: FakeClock, text: str = PIPELINE_TEXT) -> None:
        pipeline = loads_pipeline(text)
        self.clock = clock
        self.transport = RecordingTransport()
        self.events: list[Event] = []
        bus = EventBus()
        bus.subscribe(self.events.append)
        stores = (
            MemoryStore(pipeline=pipeline.name, name="primary"),
            MemoryStore(pipeline=pipeline.name, name="backup"),
        )
        self.runtime = open_runtime(
            pipeline,
            clock=clock,
            transport=self.transport,
            events=bus,
            rng=random.Random(3),
            stores=stores,
        )
        self.orchestrator = self.runtime.orchestrator
        self.tracker = self.runtime.tracker

    def complete(
        self, phase: str, processor: str, run_key: str = "2026-01-28", **kwargs: Any
    ) -> Any:
        return self.orchestrator.handle_completion(phase, run_key, processor, **kwargs)

    def events_of(self, kind: EventKind) -> list[Event]:
        return [e for e in self.events if e.kind is kind]

    def close(self) -> None:
        self.runtime.close()


RUN = "2026-01-28"
PIPELINE = """
[pipeline]
name = "nightly"

[[phases]]
name = "ingest"
processors = ["boxscores", "odds"]
optional = ["notes"]
next = ["features", "injuries"]
timeout = "10m"

[[phases]]
name = "features"
processors = ["player"]
next = "predict"

[[phases]]
name = "injuries"
processors = ["feed"]
next = "predict"

[[phases]]
name = "predict"
processors = ["model"]
"""


def scripted_run(clock: FakeClock, earlier: int = 0) -> MemoryRig:
    """A run with a failure, a late report, a diamond, a rerun and delivered triggers,
    after ``earlier`` complete runs on the days before."""
    rig = MemoryRig(clock, text=PIPELINE)
    earlier_runs(rig, clock, earlier)
    steps = [
        (60, "ingest", "boxscores", "failed"),
        (120, "ingest", "boxscores", "success"),
        (700, "ingest", "odds", "success"),
        (60, "features", "player", "success"),
        (90, "injuries", "feed", "success"),
        (300, "predict", "model", "success"),
    ]
    for seconds, phase, processor, status in steps:
        clock.advance(seconds)
        rig.complete(phase, processor, RUN, status=status)
        rig.runtime.dispatcher.run_once()
    clock.advance(600)
    rig.orchestrator.rerun("predict", RUN)
    clock.advance(120)
    rig.complete("predict", "model", RUN)
    rig.runtime.dispatcher.run_once()
    return rig


def earlier_runs(rig: MemoryRig, clock: FakeClock, days: int = 12) -> None:
    """``days`` complete runs before RUN, ingest a little slower each day."""
    for day in range(days, 0, -1):
        run_key = f"2026-01-{28 - day:02d}"
        steps = [
            (200, "ingest", "boxscores"),
            (60 + 30 * (days - day), "ingest", "odds"),
            (60, "features", "player"),
            (40, "injuries", "feed"),
            (240, "predict", "model"),
        ]
        for seconds, phase, processor in steps:
            clock.advance(seconds)
            rig.complete(phase, processor, run_key)
        rig.runtime.dispatcher.run_once()
        clock.advance(3600)
