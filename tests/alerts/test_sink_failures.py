"""An alert sink that keeps failing: CRITICAL once per streak, counted, resolved when it works."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from phasegate.alerts import Alerter
from phasegate.events import Event, EventKind, Severity
from phasegate.metrics import Metrics
from phasegate.testing import FakeClock
from support import Harness, RecordingServer

PIPELINE = """
[pipeline]
name = "orders"

[alerts.slack]
webhook_url = "{url}/services/T0/B0/FAILINGSECRET"
min_severity = "warning"

[[phases]]
name = "extract"
processors = ["api", "files"]
next = "load"

[[phases]]
name = "load"
processors = ["warehouse"]
"""


def alerter_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "phasegate.alerts.alerter" and r.levelno == level
    ]


def test_a_webhook_failing_forever_is_critical_once_counted_and_resolved(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """500 forever: one CRITICAL for the streak, a WARNING per later alert, failed counted; then 200 resolves."""
    caplog.set_level(logging.INFO)
    with RecordingServer((500, {}, b"rollup_error")) as server:
        harness = Harness(tmp_path, clock, PIPELINE.format(url=server.url))
        alerter = harness.runtime.alerter
        assert alerter is not None
        metrics = Metrics(harness.runtime)
        for day in (1, 2, 3):
            harness.complete("extract", "api", f"2026-01-0{day}", status="failed")
        assert alerter.drain(10)
        scraped = generate_latest(metrics.registry).decode()
        [critical] = alerter_records(caplog, logging.CRITICAL)
        warnings = alerter_records(caplog, logging.WARNING)
        server.default = (200, {}, b"ok")
        harness.complete("extract", "api", "2026-01-04", status="failed")
        assert alerter.drain(10)
        after = generate_latest(metrics.registry).decode()
        resolved = alerter_records(caplog, logging.INFO)
        harness.runtime.close()
    assert "alert not delivered to slack: slack webhook answered HTTP 500" in critical
    assert "alert sink slack is failing" in critical
    assert [w.split(" not delivered")[0] for w in warnings] == ["alert 'processor failed'"] * 2
    assert "(2 in a row)" in warnings[0]
    assert "(3 in a row)" in warnings[1]
    assert 'phasegate_alerts_total{outcome="failed"} 3.0' in scraped
    assert 'phasegate_alert_sink_failures_in_a_row{sink="slack"} 3.0' in scraped
    assert resolved == ["alert sink slack delivers again, after 3 failed alert(s)"]
    assert 'phasegate_alerts_total{outcome="sent"} 1.0' in after
    assert 'phasegate_alert_sink_failures_in_a_row{sink="slack"} 0.0' in after
    assert len(server.requests) == 3 * 4 + 1  # each failed alert was tried 1 + 3 times
    assert "FAILINGSECRET" not in caplog.text


class CrashingSink:
    """A sink with a bug: raises something that is not AlertDeliveryError."""

    name = "crashing"
    min_severity = Severity.WARNING

    def send(self, alert: object) -> None:
        raise KeyError("blocks")

    def close(self) -> None:
        return


def test_a_crashing_sink_starts_a_streak_with_its_traceback(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A sink raising an unexpected error is logged CRITICAL with the traceback, and counted."""
    alerter = Alerter([CrashingSink()], clock=clock)
    alerter.start()
    alerter.handle_event(Event(EventKind.UNEXPECTED_ERROR, Severity.CRITICAL, "api", "boom"))
    assert alerter.drain(5)
    alerter.close(1)
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "sink crashed: KeyError" in record.getMessage()
    assert record.exc_info is not None
    assert alerter.counts["failed"] == 1
    assert alerter.failing_sinks() == {"crashing": 1}
