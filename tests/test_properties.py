"""Property: under any interleaving of duplicate, late and out-of-order reports and store
outages, each complete (phase, run key) is triggered exactly once and no incomplete one is."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasegate.errors import BothStoresFailed
from phasegate.events import EventKind
from phasegate.testing import FakeClock
from support import Harness

PIPELINE = """
[pipeline]
name = "prop"

[[phases]]
name = "a"
processors = ["p1", "p2"]
next = "b"

[[phases]]
name = "b"
processors = ["q1"]
"""
RUNS = ("2026-01-01", "2026-01-02")
PROCESSORS = (("a", "p1"), ("a", "p2"), ("b", "q1"))

report = st.tuples(
    st.just("report"),
    st.sampled_from(RUNS),
    st.sampled_from(PROCESSORS),
    st.sampled_from(["success", "success", "failed"]),
)
fault = st.tuples(st.sampled_from(["primary", "backup"]), st.booleans())
advance = st.tuples(st.just("advance"), st.sampled_from([1, 31]))
operations = st.lists(st.one_of(report, report, fault, advance), max_size=40)


def play(
    steps: list[tuple[Any, ...]], backend: str, policy: str
) -> tuple[Counter[tuple[str, str]], set[tuple[str, str, str]], Harness, Path]:
    directory = tempfile.mkdtemp(prefix="phasegate-prop-")
    text = PIPELINE + f'\n[resilience]\nclaim_fallback = "{policy}"\n'
    # Durability is not what this property is about: skip the fsyncs to try more cases.
    harness = Harness(Path(directory), FakeClock(), text, synchronous="OFF", backend=backend)
    acknowledged: set[tuple[str, str, str]] = set()
    for step in steps:
        if step[0] == "report":
            _, run_key, (phase, processor), status = step
            try:
                harness.complete(phase, processor, run_key, status=status)
            except BothStoresFailed:
                continue
            if status == "success":
                acknowledged.add((phase, run_key, processor))
        elif step[0] == "advance":
            harness.clock.advance(step[1])
        else:
            switch = harness.primary_fault if step[0] == "primary" else harness.backup_fault
            if step[1]:
                switch.fail()
            else:
                switch.heal()
    # The outage ends; the replicator catches up and a later sweep settles what was deferred.
    harness.primary_fault.heal()
    harness.backup_fault.heal()
    harness.clock.advance(31)
    harness.tracker.resync()
    harness.orchestrator.sweep()
    harness.clock.advance(31)
    harness.orchestrator.sweep()
    claims: Counter[tuple[str, str]] = Counter(
        (e.phase or "", e.run_key or "") for e in harness.events_of(EventKind.TRIGGER_CLAIMED)
    )
    return claims, acknowledged, harness, Path(directory)


@pytest.mark.parametrize(
    ("backend", "policy"), [("sqlite", "defer"), ("sqlite", "backup"), ("memory", "defer")]
)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=operations)
def test_exactly_one_trigger_per_complete_phase_under_any_interleaving(
    backend: str, policy: str, steps: list[tuple[Any, ...]]
) -> None:
    """Complete phases are claimed exactly once; incomplete ones never; stores agree —
    on every backend, under either claim policy (one process)."""
    claims, acknowledged, harness, directory = play(steps, backend, policy)
    try:
        for run_key in RUNS:
            for phase, processors in (("a", ("p1", "p2")), ("b", ("q1",))):
                complete = all((phase, run_key, p) in acknowledged for p in processors)
                assert claims[(phase, run_key)] == (1 if complete else 0), (phase, run_key)
            entries = harness.tracker.triggers(run_key)
            assert len({e.trigger.phase for e in entries}) == len(entries)
            assert {e.trigger.phase for e in entries} == {
                p for (p, r), n in claims.items() if r == run_key and n
            }
    finally:
        harness.runtime.close()
        shutil.rmtree(directory, ignore_errors=True)
