"""End to end on Google Cloud's stack: Firestore primary, BigQuery backup, Pub/Sub out.

Every part is real and local: Google's Firestore emulator (a private one, killed and
restarted empty for the faults), bqemulator for BigQuery, Google's Pub/Sub emulator for
the triggers. The runtime runs on a fake clock, so retries and the breaker's reset take
no real time; only the restarted emulator's own start-up is waited for.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from emulators import FirestoreEmulator
from pubsub_emulator import PROJECT, PubSubEmulator, shared_emulator

from phasegate.config import loads_pipeline
from phasegate.errors import BothStoresFailed, StoreError
from phasegate.model import Status, trigger_id_for
from phasegate.reconcile import reconcile
from phasegate.runtime import Runtime, open_runtime
from phasegate.stores import open_store
from phasegate.testing import FakeClock, FaultSwitch
from phasegate.tracker import StoreRole

PIPELINE = "e2e"
PIPELINE_TOML = """
[pipeline]
name = "e2e"

[stores]
primary = "{primary}"
backup = "{backup}"

[triggers]
transport = "{transport}"

[[phases]]
name = "phase2"
processors = ["games", "players"]
next = "phase3"

[[phases]]
name = "phase3"
processors = ["analytics"]
"""
# Emulators on a shared, loaded machine: a run of real round trips needs more than the
# suite's default per-test timeout.
SLOW = pytest.mark.timeout(900)
pytestmark = SLOW  # the Pub/Sub emulator starts on first use, inside a test


@dataclass
class Topic:
    """A Pub/Sub topic with a subscription made before anything is published."""

    emulator: PubSubEmulator
    name: str
    subscription: str

    @property
    def url(self) -> str:
        return f"pubsub://{PROJECT}/{self.name}"

    def drain(self) -> list[Any]:
        """Every message waiting on the subscription (pulled until a pull comes back empty)."""
        messages: list[Any] = []
        while batch := self.emulator.pull(self.subscription):
            messages.extend(batch)
        return messages


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> Topic:
    """A fresh topic and subscription on the session's Pub/Sub emulator."""
    emulator = shared_emulator()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    name = emulator.create_topic()
    return Topic(emulator, name, emulator.create_subscription(name))


def pipeline_text(primary: str, backup: str, transport: str) -> str:
    return PIPELINE_TOML.format(primary=primary, backup=backup, transport=transport)


def fresh_urls() -> tuple[str, str]:
    """A Firestore URL on its own prefix and a BigQuery URL on its own dataset."""
    tag = uuid.uuid4().hex[:12]
    return f"firestore://phasegate-test?prefix=e{tag}", f"bigquery://phasegate-test/e{tag}"


@pytest.fixture
def gcp_runtime(
    bigquery_host: str, topic: Topic, clock: FakeClock
) -> Iterator[Callable[..., Runtime]]:
    """``make(backup_fault=None, primary_fault=None)`` opens a runtime on Firestore (the
    emulator ``FIRESTORE_EMULATOR_HOST`` names), BigQuery and the topic; a fault switch
    given wraps that store."""
    del bigquery_host
    opened: list[Runtime] = []

    def make(
        *, primary_fault: FaultSwitch | None = None, backup_fault: FaultSwitch | None = None
    ) -> Runtime:
        primary_url, backup_url = fresh_urls()
        pipeline = loads_pipeline(pipeline_text(primary_url, backup_url, topic.url))
        primary = open_store(primary_url, pipeline=PIPELINE, name="primary")
        backup = open_store(backup_url, pipeline=PIPELINE, name="backup")
        runtime = open_runtime(
            pipeline,
            clock=clock,
            stores=(
                primary_fault.wrap(primary) if primary_fault else primary,
                backup_fault.wrap(backup) if backup_fault else backup,
            ),
        )
        opened.append(runtime)
        return runtime

    yield make
    for runtime in opened:
        runtime.close()


def raw(store: Any) -> Any:
    """The store under a fault wrapper, if any."""
    return getattr(store, "inner", store)


def wait_until_answers(store: Any, seconds: float = 90.0) -> None:
    """Wait (real time, bounded) until a restarted emulator serves ``store`` again: gRPC
    reconnects with backoff, as any caller of the real service would wait it out."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            store.completions("2000-01-01")
            return
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def published(topic: Topic) -> list[dict[str, Any]]:
    """The triggers published on the topic, each with its attributes."""
    return [{**json.loads(m.data), "attributes": dict(m.attributes)} for m in topic.drain()]


def successes(store: Any, run_key: str) -> set[tuple[str, str]]:
    return {
        (c.phase, c.processor)
        for c in raw(store).completions(run_key)
        if c.status is Status.SUCCESS
    }


# -- scenarios A-D (SPEC §3) with real faults -------------------------------------------


def test_scenario_a_firestore_killed_the_report_is_acknowledged_by_bigquery(
    private_firestore_emulator: FirestoreEmulator,
    gcp_runtime: Callable[..., Runtime],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A: primary killed, backup up: acknowledged by BigQuery alone, WARNING "using backup"."""
    runtime = gcp_runtime()
    runtime.record("phase2", "2026-03-01", "games")
    private_firestore_emulator.kill()
    with caplog.at_level(logging.WARNING):
        result = runtime.record("phase2", "2026-03-01", "players").result
    assert (result.primary_ok, result.backup_ok) == (False, True)
    assert result.phase_complete
    assert result.deferred
    assert not result.claimed
    assert any(
        r.levelno == logging.WARNING and "using backup" in r.getMessage() for r in caplog.records
    )
    assert successes(runtime.tracker.backup, "2026-03-01") == {
        ("phase2", "games"),
        ("phase2", "players"),
    }


def test_scenario_b_bigquery_failing_the_report_is_acknowledged_by_firestore(
    firestore_host: str,
    gcp_runtime: Callable[..., Runtime],
    clock: FakeClock,
    topic: Topic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """B: backup failing, primary up: acknowledged by Firestore, WARNING, trigger published."""
    del firestore_host
    fault = FaultSwitch(clock)
    runtime = gcp_runtime(backup_fault=fault)
    runtime.record("phase2", "2026-03-02", "games")
    fault.fail()
    with caplog.at_level(logging.WARNING):
        recorded = runtime.record("phase2", "2026-03-02", "players")
    assert (recorded.result.primary_ok, recorded.result.backup_ok) == (True, False)
    assert recorded.result.claimed
    assert any(
        r.levelno == logging.WARNING and "backup store failed" in r.getMessage()
        for r in caplog.records
    )
    assert runtime.tracker.missed_run_keys(StoreRole.BACKUP) == {"2026-03-02"}
    fault.heal()
    clock.advance(31)
    runtime.tracker.resync()
    assert successes(runtime.tracker.backup, "2026-03-02") == {
        ("phase2", "games"),
        ("phase2", "players"),
    }
    [message] = published(topic)
    assert message["attributes"]["trigger_id"] == trigger_id_for(PIPELINE, "phase2", "2026-03-02")


def test_scenario_c_both_down_the_report_is_not_acknowledged(
    private_firestore_emulator: FirestoreEmulator,
    gcp_runtime: Callable[..., Runtime],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """C: Firestore killed and BigQuery failing: BothStoresFailed, CRITICAL, nothing acked."""
    fault = FaultSwitch(clock)
    runtime = gcp_runtime(backup_fault=fault)
    private_firestore_emulator.kill()
    fault.fail()
    with caplog.at_level(logging.WARNING), pytest.raises(BothStoresFailed):
        runtime.record("phase2", "2026-03-03", "games")
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    assert runtime.tracker.counts()["both_failed"] >= 1


def test_scenario_d_a_three_second_firestore_outage_is_absorbed_by_retries(
    firestore_host: str,
    gcp_runtime: Callable[..., Runtime],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """D: a 3 s primary outage on the fake clock: retried, written to both, no breaker trip."""
    del firestore_host
    fault = FaultSwitch(clock)
    runtime = gcp_runtime(primary_fault=fault)
    fault.fail(seconds=3)
    with caplog.at_level(logging.WARNING):
        result = runtime.record("phase2", "2026-03-04", "games").result
    assert (result.primary_ok, result.backup_ok) == (True, True)
    assert runtime.tracker.counts()["retries.primary"] >= 1
    assert runtime.tracker.primary_breaker.state.value == "closed"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- the big one: Firestore loses its data mid-run ----------------------------------------


@SLOW
def test_firestore_restarted_empty_mid_run_loses_no_report_and_publishes_each_phase_run_once(
    private_firestore_emulator: FirestoreEmulator,
    gcp_runtime: Callable[..., Runtime],
    clock: FakeClock,
    topic: Topic,
) -> None:
    """Kill Firestore mid-run, restart it empty, keep reporting, reconcile, sweep, dispatch:
    each phase-run is published once under one id and every acknowledged report survives."""
    runtime = gcp_runtime()
    acknowledged: list[tuple[str, str, str]] = []

    def report(phase: str, run_key: str, processor: str) -> Any:
        result = runtime.record(phase, run_key, processor).result
        assert result.recorded
        acknowledged.append((phase, run_key, processor))
        return result

    # Before the outage: two runs go through phase 2 (with duplicates), one through phase 3.
    for phase, run_key, processor in [
        ("phase2", "2026-02-01", "games"),
        ("phase2", "2026-02-01", "games"),
        ("phase2", "2026-02-01", "players"),
        ("phase3", "2026-02-01", "analytics"),
        ("phase2", "2026-02-02", "players"),
        ("phase2", "2026-02-02", "games"),
        ("phase2", "2026-02-03", "games"),
    ]:
        report(phase, run_key, processor)
    messages = published(topic)
    assert len(messages) == 3

    private_firestore_emulator.kill()
    during = [
        report("phase2", "2026-02-01", "players"),  # a duplicate of a triggered phase-run
        report("phase3", "2026-02-02", "analytics"),  # completes phase 3: deferred
        report("phase2", "2026-02-03", "players"),  # completes phase 2: deferred
        report("phase2", "2026-02-04", "games"),
    ]
    assert all((r.primary_ok, r.backup_ok) == (False, True) for r in during)
    assert [r.deferred for r in during] == [False, True, True, False]

    private_firestore_emulator.restart_empty()
    wait_until_answers(raw(runtime.tracker.primary))
    clock.advance(31)  # the primary's breaker lets a trial call through
    # After the restart, before any repair: Firestore is empty, BigQuery holds it all.
    after = [
        report("phase2", "2026-02-01", "games"),  # triggered before the kill
        report("phase2", "2026-02-02", "games"),  # triggered before the kill
        report("phase2", "2026-02-04", "players"),  # completes phase 2 of a missed run
        report("phase2", "2026-02-05", "games"),
        report("phase2", "2026-02-05", "players"),  # a new run, complete and claimed now
    ]
    assert all(r.primary_ok and r.backup_ok for r in after)
    assert [r.claimed for r in after] == [False, False, False, False, True]

    repair = reconcile(runtime.tracker.primary, runtime.tracker.backup, repair=True)
    assert repair.repaired
    assert not repair.remaining
    runtime.tracker.resync()
    runtime.orchestrator.sweep()
    runtime.dispatcher.run_once()
    runtime.dispatcher.run_once()

    expected = {
        ("phase2", "2026-02-01"),
        ("phase3", "2026-02-01"),
        ("phase2", "2026-02-02"),
        ("phase3", "2026-02-02"),
        ("phase2", "2026-02-03"),
        ("phase2", "2026-02-04"),
        ("phase2", "2026-02-05"),
    }
    messages += published(topic)
    by_phase_run = Counter((m["phase"], m["run_key"]) for m in messages)
    by_trigger_id = Counter(m["attributes"]["trigger_id"] for m in messages)
    assert by_phase_run == dict.fromkeys(expected, 1)
    assert by_trigger_id == {trigger_id_for(PIPELINE, *run): 1 for run in expected}
    for store in (runtime.tracker.primary, runtime.tracker.backup):
        for _phase, run_key, _processor in acknowledged:
            assert {(p, q) for p, r, q in acknowledged if r == run_key} <= successes(store, run_key)
        for phase, run_key in expected:
            [entry] = [e for e in raw(store).triggers(run_key) if e.trigger.phase == phase]
            assert entry.delivered


# -- exactly one claim among processes -------------------------------------------------


def _report_in_process(text: str, log_path: str, barrier: Any, results: Any) -> None:
    """A child process: open its own runtime, wait for the others, report the last one."""
    pipeline = loads_pipeline(text)
    runtime = open_runtime(pipeline)
    try:
        barrier.wait(60)
        result = runtime.record("phase2", "2026-04-01", "players").result
        results.put((result.claimed, result.trigger_id))
    finally:
        runtime.close()
    del log_path


@SLOW
def test_processes_racing_on_the_firestore_emulator_claim_the_trigger_once(
    firestore_host: str, bigquery_host: str, tmp_path: Path
) -> None:
    """Six processes each with its own runtime report the last processor: one TRIGGER claim."""
    del firestore_host, bigquery_host
    primary_url, backup_url = fresh_urls()
    log_path = tmp_path / "triggers.jsonl"
    text = pipeline_text(primary_url, backup_url, f"log:{log_path}")
    setup = open_runtime(loads_pipeline(text))
    setup.record("phase2", "2026-04-01", "games")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(6)
    results = context.Queue()
    processes = [
        context.Process(target=_report_in_process, args=(text, str(log_path), barrier, results))
        for _ in range(6)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    results.close()
    results.join_thread()
    trigger_id = trigger_id_for(PIPELINE, "phase2", "2026-04-01")
    assert sorted(claimed for claimed, _ in outcomes) == [False] * 5 + [True]
    assert {tid for _, tid in outcomes} == {trigger_id}
    [entry] = setup.tracker.triggers("2026-04-01")
    assert entry.delivered
    assert [json.loads(line)["trigger_id"] for line in log_path.read_text().splitlines()] == [
        trigger_id
    ]
    setup.close()


# -- the bug the big run found, in a few calls -----------------------------------------


@SLOW
def test_a_primary_that_lost_its_data_does_not_trigger_again_what_bigquery_knows(
    firestore_host: str, bigquery_host: str, tmp_path: Path
) -> None:
    """Firestore empty, BigQuery holding a delivered trigger: a duplicate report claims
    nothing, and after repair the dispatcher publishes nothing again."""
    del firestore_host, bigquery_host
    first_primary, backup_url = fresh_urls()
    log_path = tmp_path / "triggers.jsonl"
    before = open_runtime(
        loads_pipeline(pipeline_text(first_primary, backup_url, f"log:{log_path}"))
    )
    before.record("phase2", "2026-06-01", "games")
    assert before.record("phase2", "2026-06-01", "players").result.claimed
    [mirrored] = raw(before.tracker.backup).triggers("2026-06-01")
    assert mirrored.delivered  # the delivery reached the ledger, not only the primary
    before.close()

    # The same backup, behind a primary that lost everything (a new, empty prefix).
    empty_primary, _ = fresh_urls()
    after = open_runtime(
        loads_pipeline(pipeline_text(empty_primary, backup_url, f"log:{log_path}"))
    )
    try:
        result = after.record("phase2", "2026-06-01", "players").result
        assert result.phase_complete
        assert not result.claimed
        assert result.trigger_id == trigger_id_for(PIPELINE, "phase2", "2026-06-01")
        reconcile(after.tracker.primary, after.tracker.backup, repair=True)
        assert after.orchestrator.sweep() == []
        assert after.dispatcher.run_once().delivered == ()
    finally:
        after.close()
    assert len(log_path.read_text().splitlines()) == 1
