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
