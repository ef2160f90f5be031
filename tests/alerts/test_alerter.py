"""The alerter: never blocks the caller, folds repeats, rate-limits, resolves, drains on exit."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from phasegate.alerts import Alert, Alerter, LogSink
from phasegate.alerts.base import alert_from_event, fingerprint
from phasegate.events import Event, EventKind, Severity
from phasegate.testing import FakeClock
from support import Harness, RecordingServer


def alert(fp: str = "f1", severity: Severity = Severity.WARNING, title: str = "t") -> Alert:
    return Alert(
        severity=severity,
        component="phase2_to_phase3",
        title=title,
        message="something failed",
        fingerprint=fp,
        created_at=datetime(2026, 1, 28, tzinfo=UTC),
    )


class BlockedSink:
    """A sink stuck until released (a dead webhook that never answers)."""

    name = "blocked"
    min_severity = Severity.INFO

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.release.wait(30)
        self.sent.append(alert)

    def close(self) -> None:
        self.release.set()


def test_repeats_within_the_interval_fold_into_one_message_with_a_count(clock: FakeClock) -> None:
    """Five of the same fingerprint send one; after the interval the next carries the count."""
    sink = LogSink()
    alerter = Alerter([sink], clock=clock, repeat_interval=3600)
    alerter.start()
    for _ in range(5):
        alerter.notify(alert())
    alerter.notify(alert("other"))
    assert alerter.drain(5)
    assert [(a.fingerprint, a.count) for a in sink.sent] == [("f1", 1), ("other", 1)]
    clock.advance(3601)
    alerter.notify(alert())
    assert alerter.drain(5)
    assert (sink.sent[-1].fingerprint, sink.sent[-1].count) == ("f1", 5)
    alerter.close()


def test_at_most_one_message_per_second_per_sink(clock: FakeClock) -> None:
    """Three different alerts at once go out a second apart (fake clock)."""
    sink = LogSink()
    alerter = Alerter([sink], clock=clock, min_interval=1.0)
    alerter.start()
    start = clock.monotonic()
    for index in range(3):
        alerter.notify(alert(f"f{index}"))
    assert alerter.drain(5)
    assert len(sink.sent) == 3
    assert clock.sleeps == pytest.approx([1.0, 1.0])
    assert clock.monotonic() - start == pytest.approx(2.0)
    alerter.close()


def test_a_cleared_condition_sends_one_resolved_message(clock: FakeClock) -> None:
    """Breaker opened → warning; closed → one resolved; closed again → nothing."""
    sink = LogSink()
    alerter = Alerter([sink], clock=clock, min_interval=0)
    alerter.start()
    opened = Event(EventKind.BREAKER_OPENED, Severity.WARNING, "primary_store", "opened")
    closed = Event(EventKind.BREAKER_CLOSED, Severity.RESOLVED, "primary_store", "recovered")
    alerter.handle_event(opened)
    alerter.handle_event(opened)
    alerter.handle_event(closed)
    alerter.handle_event(closed)
    assert alerter.drain(5)
    assert [a.severity for a in sink.sent] == [Severity.WARNING, Severity.RESOLVED]
    assert sink.sent[1].count == 2
    assert "recovered" in sink.sent[1].message
    alerter.close()


def test_sinks_only_get_what_reaches_their_minimum_severity(clock: FakeClock) -> None:
    """A critical-only sink ignores warnings."""
    sink = LogSink(Severity.CRITICAL)
    alerter = Alerter([sink], clock=clock, min_interval=0)
    alerter.start()
    alerter.notify(alert("w", Severity.WARNING))
    alerter.notify(alert("c", Severity.CRITICAL))
    assert alerter.drain(5)
    assert [a.fingerprint for a in sink.sent] == ["c"]
    alerter.close()


def test_a_blocked_sink_never_blocks_the_caller_and_overflow_is_counted(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With the sink stuck, notify returns at once; past the queue size alerts are counted."""
    sink = BlockedSink()
    alerter = Alerter([sink], clock=clock, queue_size=3, min_interval=0)
    alerter.start()
    started = time.perf_counter()
    results = [alerter.notify(alert(f"f{i}")) for i in range(10)]
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert results.count(False) >= 6
    assert alerter.counts["dropped"] == results.count(False)
    assert "alert queue full" in caplog.text
    sink.release.set()
    assert alerter.drain(5)
    alerter.close()


def test_close_drains_the_queue_within_its_bound(clock: FakeClock) -> None:
    """Alerts queued before exit are delivered by close(); a stuck sink cannot hold it forever."""
    sink = LogSink()
    alerter = Alerter([sink], clock=clock, min_interval=0)
    alerter.start()
    for index in range(20):
        alerter.notify(alert(f"f{index}"))
    alerter.close(timeout=5)
    assert len(sink.sent) == 20
    stuck = Alerter([BlockedSink()], clock=clock)
    stuck.start()
    stuck.notify(alert())
    started = time.perf_counter()
    stuck.close(timeout=0.2)
    assert time.perf_counter() - started < 5


def test_events_become_alerts_with_a_stack_trace_and_a_hint(clock: FakeClock) -> None:
    """An event with an exception carries its type and trace; the hint says what to check."""
    try:
        raise ValueError("boom")
    except ValueError as exc:
        error = exc
    event = Event(
        EventKind.UNEXPECTED_ERROR,
        Severity.CRITICAL,
        "service",
        "unexpected error in POST /v1/completions",
        error=error,
        correlation_id="corr-9",
    )
    made = alert_from_event(event, clock.now())
    assert made.error_type == "ValueError"
    assert made.stack_trace is not None
    assert "raise ValueError" in made.stack_trace
    assert made.hint
    assert made.fingerprint == fingerprint(event) == "unexpected:service:ValueError"


SLACK_PIPELINE = """
[pipeline]
name = "orders"

[alerts.slack]
webhook_url = "{url}/services/T0/B0/SUPERSECRETPATH"
min_severity = "warning"
repeat_interval = "1h"

[[phases]]
name = "extract"
processors = ["api", "files"]
next = "load"

[[phases]]
name = "load"
processors = ["warehouse"]
"""


def test_a_dead_webhook_never_slows_handle_completion(tmp_path: Path, clock: FakeClock) -> None:
    """With Slack holding every request, 20 failing reports take far less than one held request."""
    hold = threading.Event()
    with RecordingServer() as server:
        server.default = hold  # type: ignore[assignment]
        harness = Harness(tmp_path, clock, SLACK_PIPELINE.format(url=server.url))
        harness.complete("extract", "api")
        started = time.perf_counter()
        for day in range(1, 21):
            harness.complete("extract", "files", f"2026-01-{day:02d}", status="failed")
        elapsed = time.perf_counter() - started
        assert harness.runtime.alerter is not None
        queued = harness.runtime.alerter.counts["queued"]
        hold.set()
        harness.runtime.close(alert_drain_timeout=30)
    assert queued == 20
    assert elapsed < 5.0, f"20 reports took {elapsed:.2f}s with Slack stuck"
    assert len(server.requests) == 20


def test_no_secret_reaches_any_output(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The webhook path never appears in alerts sent, log records or errors."""
    caplog.set_level(logging.DEBUG)
    with RecordingServer((500, {}, b"rollup_error")) as server:
        harness = Harness(tmp_path, clock, SLACK_PIPELINE.format(url=server.url))
        harness.complete("extract", "api", status="failed")
        harness.runtime.close(alert_drain_timeout=30)
    bodies = b"".join(r.body for r in server.requests).decode()
    assert server.requests
    assert "SUPERSECRETPATH" not in bodies
    assert "alert not delivered to slack" in caplog.text
    assert "SUPERSECRETPATH" not in caplog.text
    assert all("SUPERSECRETPATH" not in repr(e) for e in harness.events)


def _events_of(harness: Harness) -> list[Any]:
    return harness.events


LOG_PIPELINE = """
[pipeline]
name = "orders"

[alerts.log]
min_severity = "warning"

[[phases]]
name = "extract"
processors = ["api", "files"]
next = "load"

[[phases]]
name = "load"
processors = ["warehouse"]
"""


def test_store_outages_alert_once_per_opening_and_resolve(tmp_path: Path, clock: FakeClock) -> None:
    """A breaker opening warns once and resolves; both stores down is critical, then resolved."""
    harness = Harness(tmp_path, clock, LOG_PIPELINE)
    alerter = harness.runtime.alerter
    assert alerter is not None
    [sink] = alerter.sinks
    assert isinstance(sink, LogSink)
    harness.primary_fault.fail()
    harness.complete("extract", "api")
    harness.complete("extract", "files")
    harness.backup_fault.fail()
    with pytest.raises(Exception, match="both stores failed"):
        harness.complete("load", "warehouse", "2026-02-01")
    harness.primary_fault.heal()
    harness.backup_fault.heal()
    clock.advance(31)
    harness.complete("load", "warehouse", "2026-02-02")
    assert alerter.drain(5)
    seen = [(a.severity.value, a.fingerprint) for a in sink.sent]
    assert seen.count(("warning", "breaker:primary_store")) == 1
    assert ("critical", "stores:both-failed") in seen
    assert ("resolved", "stores:both-failed") in seen
    assert ("resolved", "breaker:primary_store") in seen
    harness.runtime.close()


def test_the_alerter_starts_no_thread_until_started(clock: FakeClock) -> None:
    """Constructing an alerter only queues; start() delivers; stop() ends its thread."""

    def alert_threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "phasegate-alerts")

    before = alert_threads()
    sink = BlockedSink()
    sink.release.set()
    alerter = Alerter([sink], clock=clock, min_interval=0)
    alerter.notify(alert("a", title="a"))
    assert alert_threads() == before
    assert sink.sent == []
    alerter.start()
    assert alert_threads() == before + 1
    assert alerter.drain(5)
    assert [a.title for a in sink.sent] == ["a"]
    alerter.stop()
    assert alert_threads() == before
    alerter.close()
