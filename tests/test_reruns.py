"""Reruns: attempt N+1 of a phase and everything downstream, history kept, ids repeatable."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from phasegate.cli.runs import rerun_with
from phasegate.config import loads_pipeline
from phasegate.errors import StoreError, ValidationError
from phasegate.events import Event, EventBus, EventKind
from phasegate.model import (
    PhaseState,
    Trigger,
    TriggerReason,
    rerun_signal_id_for,
    trigger_id_for,
)
from phasegate.orchestrator import Orchestrator
from phasegate.reruns import SUPERSEDED
from phasegate.runtime import open_runtime
from phasegate.service import create_app
from phasegate.stores.memory import MemoryStore
from phasegate.testing import FakeClock
from rigs import MemoryRig
from support import PIPELINE_TEXT, Harness

RUN = "2026-01-28"


@pytest.fixture(params=["memory", "sqlite"])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[MemoryRig | Harness]:
    """The orders pipeline (extract → transform → load) in memory or on SQLite."""
    rig = MemoryRig(clock) if request.param == "memory" else Harness(tmp_path, clock)
    yield rig
    rig.runtime.close()


@pytest.fixture
def rig(harness: MemoryRig) -> MemoryRig:
    """``harness`` with extract triggered for RUN."""
    harness.complete("extract", "api")
    harness.complete("extract", "files")
    harness.runtime.dispatcher.run_once()
    return harness


def test_a_rerun_opens_a_new_attempt_under_a_new_id_and_keeps_history(
    rig: MemoryRig, clock: FakeClock
) -> None:
    """Rerun extract: a start signal for attempt 2; reports then count for attempt 2 only."""
    clock.advance(600)
    result = rig.orchestrator.rerun("extract", RUN)
    signal = result.trigger
    assert result.claimed
    message = signal.to_message()
    assert (message["reason"], message["ready_phases"], message["attempt"]) == (
        "rerun",
        ["extract"],
        2,
    )
    assert signal.trigger_id == rerun_signal_id_for("orders", RUN, 1)
    statuses = {s.phase: s for s in rig.orchestrator.run_status(RUN)}
    assert {p: s.attempt for p, s in statuses.items()} == {
        "extract": 2,
        "transform": 2,
        "load": 2,
    }
    assert statuses["extract"].state is PhaseState.WAITING
    assert statuses["extract"].started_at == clock.now()
    assert statuses["extract"].succeeded == ()
    clock.advance(60)
    rig.complete("extract", "api")
    second = rig.complete("extract", "files")
    assert second.claimed
    assert second.trigger_id == trigger_id_for("orders", "extract", RUN, 2)
    assert second.trigger_id != trigger_id_for("orders", "extract", RUN, 1)
    attempts = sorted((c.processor, c.attempt) for c in rig.tracker.history(RUN))
    assert ("api", 1) in attempts
    assert ("api", 2) in attempts
    assert (SUPERSEDED, 1) in attempts
    executions = rig.tracker.phase_executions("extract", run_key=RUN)
    assert sorted(e.attempt for e in executions) == [1, 2]
    rig.runtime.dispatcher.run_once()
    extract_messages = [m for m in rig.transport.delivered if m.phase == "extract"]
    assert [(m.reason, m.attempt) for m in extract_messages] == [
        (TriggerReason.COMPLETE, 1),
        (TriggerReason.RERUN, 2),
        (TriggerReason.COMPLETE, 2),
    ]
    assert extract_messages[-1].ready_phases == ("transform",)


def test_asking_for_the_same_rerun_twice_answers_the_same_signal(rig: MemoryRig) -> None:
    """While attempt 2 has not triggered, a second rerun changes nothing and says so."""
    first = rig.orchestrator.rerun("extract", RUN)
    again = rig.orchestrator.rerun("extract", RUN)
    assert (first.claimed, again.claimed) == (True, False)
    assert again.trigger.trigger_id == first.trigger.trigger_id
    assert rig.orchestrator.phase_status("extract", RUN).attempt == 2
    rig.complete("extract", "api")
    rig.complete("extract", "files")
    third = rig.orchestrator.rerun("extract", RUN)
    assert third.claimed
    assert third.trigger.attempt == 3
    assert third.trigger.trigger_id == rerun_signal_id_for("orders", RUN, 2)


def test_a_rerun_downstream_leaves_upstream_phases_alone(rig: MemoryRig) -> None:
    """Rerunning transform opens attempt 2 of transform and load; extract stays triggered."""
    rig.orchestrator.rerun("transform", RUN)
    statuses = {s.phase: s for s in rig.orchestrator.run_status(RUN)}
    assert statuses["extract"].attempt == 1
    assert statuses["extract"].state is PhaseState.TRIGGERED
    assert (statuses["transform"].attempt, statuses["load"].attempt) == (2, 2)


def test_another_process_that_never_saw_the_rerun_counts_reports_for_the_new_attempt(
    rig: MemoryRig,
) -> None:
    """A second orchestrator on the same stores learns of the rerun from its first write."""
    other = Orchestrator(rig.runtime.pipeline, rig.tracker, clock=rig.clock)
    assert other.phase_status("extract", RUN).attempt == 1  # it looks once, before
    other = Orchestrator(rig.runtime.pipeline, rig.tracker, clock=rig.clock)
    rig.orchestrator.rerun("extract", RUN)
    first = other.handle_completion("extract", RUN, "api")
    assert first.completion.attempt == 2
    assert not first.phase_complete
    done = other.handle_completion("extract", RUN, "files")
    assert done.claimed
    assert done.trigger_id == trigger_id_for("orders", "extract", RUN, 2)


def test_a_run_with_no_records_cannot_be_rerun(harness: MemoryRig) -> None:
    """Rerunning a run nobody reported is refused naming the run key; backfill starts it."""
    with pytest.raises(ValidationError, match="nothing to rerun") as info:
        harness.orchestrator.rerun("extract", "2026-02-01")
    assert info.value.field == "run_key"
    with pytest.raises(ValidationError, match="unknown phase"):
        harness.orchestrator.rerun("nope", RUN)


DIAMOND = """
[pipeline]
name = "diamond"

[[phases]]
name = "a"
processors = ["extract"]
next = ["b", "c"]

[[phases]]
name = "b"
processors = ["clean"]
next = "d"

[[phases]]
name = "c"
processors = ["enrich"]
next = "d"

[[phases]]
name = "d"
processors = ["publish"]
"""


@pytest.fixture
def diamond(clock: FakeClock) -> Iterator[MemoryRig]:
    rig = MemoryRig(clock, text=DIAMOND)
    yield rig
    rig.close()


def test_rerunning_one_branch_of_a_diamond_starts_d_again_once(
    diamond: MemoryRig, clock: FakeClock
) -> None:
    """After a rerun of b, d starts again once b's attempt 2 triggers, by a ready signal."""
    for phase, processor in [("a", "extract"), ("b", "clean"), ("c", "enrich")]:
        diamond.complete(phase, processor)
        clock.advance(1)
    diamond.orchestrator.rerun("b", RUN)
    clock.advance(1)
    diamond.complete("b", "clean")
    diamond.runtime.dispatcher.run_once()
    starts_of_d = [m for m in diamond.transport.delivered if "d" in (m.ready_phases or ())]
    assert [(m.phase, m.reason, m.attempt) for m in starts_of_d] == [
        ("c", TriggerReason.COMPLETE, 1),
        ("d", TriggerReason.READY, 2),
    ]
    assert diamond.orchestrator.phase_status("d", RUN).state is PhaseState.WAITING


def test_the_rerun_command_prints_the_start_signal_and_delivers_it(
    rig: MemoryRig, capsys: pytest.CaptureFixture[str]
) -> None:
    """``phasegate rerun --format json``: the signal's id and attempt; asked again, same id."""
    args = argparse.Namespace(phase="extract", run_key=RUN, format="json")
    assert rerun_with(args, rig.runtime) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["attempt"], first["claimed"], first["delivery"]) == (2, True, "delivered")
    assert rig.transport.delivered[-1].trigger_id == first["trigger_id"]
    text = argparse.Namespace(phase="extract", run_key=RUN, format="text")
    assert rerun_with(text, rig.runtime) == 0
    assert f"was already started by this rerun ({first['trigger_id']})" in capsys.readouterr().out
    bad = argparse.Namespace(phase="extract", run_key="yesterday", format="text")
    with pytest.raises(ValidationError, match="run_key"):  # main() prints it, exit 1
        rerun_with(bad, rig.runtime)


def test_post_rerun_answers_202_with_the_signal_and_the_same_id_when_repeated(
    rig: MemoryRig,
) -> None:
    """``POST /v1/runs/{run_key}/rerun``: 202 with the message; 404, 422 name what is wrong."""
    client = TestClient(create_app(rig.runtime))
    first = client.post(f"/v1/runs/{RUN}/rerun", json={"phase": "transform"})
    assert first.status_code == 202
    body = first.json()
    assert (body["attempt"], body["claimed"]) == (2, True)
    assert body["message"]["reason"] == "rerun"
    assert body["message"]["ready_phases"] == ["transform"]
    again = client.post(f"/v1/runs/{RUN}/rerun", json={"phase": "transform"})
    assert (again.json()["trigger_id"], again.json()["claimed"]) == (body["trigger_id"], False)
    missing = client.post("/v1/runs/2026-03-01/rerun", json={"phase": "transform"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unknown_run")
    wrong = client.post(f"/v1/runs/{RUN}/rerun", json={"phase": "nope"})
    assert (wrong.status_code, wrong.json()["error"]["field"]) == (422, "phase")
    extra = client.post(f"/v1/runs/{RUN}/rerun", json={"phase": "load", "force": True})
    assert (extra.status_code, extra.json()["error"]["field"]) == (422, "force")
    run = client.get(f"/v1/runs/{RUN}").json()
    assert {p["phase"]: p["attempt"] for p in run["phases"]} == {
        "extract": 1,
        "transform": 2,
        "load": 2,
    }


class PhaseKeyedStore(MemoryStore):
    """An outbox keyed by phase and run key, as the SQL store's schema version 1 is."""

    def claim_trigger(self, trigger: Trigger) -> bool:
        taken = any(e.trigger.phase == trigger.phase for e in self.triggers(trigger.run_key))
        return False if taken else super().claim_trigger(trigger)


def test_a_store_that_cannot_hold_a_start_signal_says_so_loudly(clock: FakeClock) -> None:
    """On a phase-keyed outbox a rerun fails naming the upgrade, and a critical event says so."""
    pipeline = loads_pipeline(PIPELINE_TEXT)
    stores = (PhaseKeyedStore(pipeline=pipeline.name), PhaseKeyedStore(pipeline=pipeline.name))
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    runtime = open_runtime(pipeline, clock=clock, stores=stores, events=bus)
    try:
        runtime.orchestrator.handle_completion("extract", RUN, "api")
        runtime.orchestrator.handle_completion("extract", RUN, "files")
        with pytest.raises(StoreError, match="outbox keyed by trigger id"):
            runtime.orchestrator.rerun("extract", RUN)
    finally:
        runtime.close()
    critical = [e for e in events if e.kind is EventKind.UNEXPECTED_ERROR]
    assert len(critical) == 1
    assert "lost its claim to another trigger of the same phase" in critical[0].message
