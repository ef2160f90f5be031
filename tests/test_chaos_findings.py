"""Bugs the chaos run (``make chaos``) found, each as its smallest reproduction.

Each test is ``xfail(strict=True)``: it fails today for the reason given, and turns the
suite red the day the bug is fixed, so whoever fixes it removes the mark.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from phasegate.alerts.alerter import Alerter
from phasegate.alerts.base import Alert
from phasegate.config import loads_pipeline
from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.model import Completion, RecordSet, Status
from phasegate.reconcile import reconcile
from phasegate.runtime import open_runtime
from phasegate.service import server
from phasegate.stores.memory import MemoryStore
from phasegate.testing import FakeClock
from support import RecordingTransport, free_port


def completion(processor: str) -> Completion:
    return Completion(
        "extract", "2026-01-28", processor, Status.SUCCESS, datetime(2026, 1, 28, tzinfo=UTC)
    )


class LiveStore(MemoryStore):
    """A primary taking a new write (its backup half still in flight) while repair runs."""

    late: Completion | None = None

    def import_records(self, records: RecordSet) -> None:
        super().import_records(records)
        if self.late is not None:
            late, self.late = self.late, None
            super().import_records(RecordSet(completions=(late,)))


def test_a_write_landing_during_repair_is_not_reported_as_left_after_repair() -> None:
    """A completion recorded in the primary while a repair pass runs is new, not a
    difference repair failed to fix: no CRITICAL divergence for it."""
    primary = LiveStore(pipeline="orders", name="primary")
    backup = MemoryStore(pipeline="orders", name="backup")
    primary.import_records(RecordSet(completions=(completion("api"),)))
    primary.late = completion("files")
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    report = reconcile(primary, backup, repair=True, events=bus)
    assert [d.key for d in report.differences] == [("extract", "2026-01-28", "api")]
    critical = [
        e
        for e in events
        if e.kind is EventKind.RECONCILE_DIVERGENCE and e.severity is Severity.CRITICAL
    ]
    assert report.remaining == (), report.remaining
    assert critical == []


PIPELINE = loads_pipeline(
    """
[pipeline]
name = "leases"

[[phases]]
name = "a"
processors = ["p"]
"""
)


def test_a_trigger_left_behind_by_a_dead_replicas_lease_is_alerted(clock: FakeClock) -> None:
    """When a dispatcher takes over a trigger whose lease another owner let expire, it
    raises a warning naming the trigger (the only trace of that replica's crash)."""
    stores = (MemoryStore(pipeline="leases", name="primary"), MemoryStore(name="backup"))
    events: list[Event] = []
    buses = [EventBus(), EventBus()]
    buses[1].subscribe(events.append)
    crashed, survivor = (
        open_runtime(
            PIPELINE,
            clock=clock,
            transport=RecordingTransport(),
            rng=random.Random(index),
            stores=stores,
            events=buses[index],
        )
        for index in range(2)
    )
    result = crashed.orchestrator.handle_completion("a", "2026-01-28", "p")
    crashed.dispatcher.lease()  # ... and the process is SIGKILLed before delivering
    clock.advance(crashed.dispatcher.lease_seconds + 1)
    assert survivor.dispatcher.run_once().delivered == (result.trigger_id,)
    warned = [
        e
        for e in events
        if e.severity in {Severity.WARNING, Severity.CRITICAL}
        and e.details.get("trigger_id") == result.trigger_id
    ]
    assert warned, [e.message for e in events]


def test_the_service_runs_the_replicator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While ``phasegate serve`` serves, the replicator's background thread is running."""
    threads_while_serving: list[str] = []

    def serve_nothing(_server: object, *_args: object, **_kwargs: object) -> None:
        threads_while_serving.extend(t.name for t in threading.enumerate())

    monkeypatch.setattr(server._Server, "run", serve_nothing)
    pipeline = loads_pipeline(
        f"""
[pipeline]
name = "orders"

[stores]
primary = "sqlite:///{tmp_path}/primary.db"
backup = "sqlite:///{tmp_path}/backup.db"

[[phases]]
name = "extract"
processors = ["api"]
"""
    )
    assert server.serve(pipeline, port=free_port()) == 0
    assert "phasegate-dispatcher" in threads_while_serving
    assert "phasegate-replicator" in threads_while_serving, threads_while_serving


class KeptSink:
    """An alert sink that keeps what it is sent."""

    name = "kept"
    min_severity = Severity.WARNING

    def __init__(self) -> None:
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.sent.append(alert)

    def close(self) -> None:
        return


def test_a_flood_of_deferred_claims_does_not_crowd_out_a_critical_alert(
    clock: FakeClock,
) -> None:
    """With the queue full of claim_deferred warnings, a critical alert still goes out."""
    sink = KeptSink()
    alerter = Alerter([sink], clock=clock, min_interval=0.0, queue_size=10)
    for day in range(1, 21):  # a 20-run outage's deferred claims, before the sink drains
        alerter.handle_event(
            Event(
                EventKind.CLAIM_DEFERRED,
                Severity.WARNING,
                "phase2_to_phase3",
                "claim deferred until the primary decides it",
                run_key=f"2026-01-{day:02d}",
                phase="phase2",
            )
        )
    alerter.handle_event(
        Event(
            EventKind.DELIVERY_FAILED,
            Severity.CRITICAL,
            "dispatcher",
            "trigger t-1 not delivered after 3 tries",
            details={"trigger_id": "t-1"},
        )
    )
    alerter.start()
    try:
        assert alerter.drain(10.0)
    finally:
        alerter.close(1.0)
    assert Severity.CRITICAL in [a.severity for a in sink.sent], alerter.counts
