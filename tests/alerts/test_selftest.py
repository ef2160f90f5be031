"""``phasegate alert test`` and the library call behind it, against a local Slack webhook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phasegate.alerts import Alerter, LogSink, SinkResult, send_test_alert
from phasegate.cli import main
from phasegate.config import loads_pipeline
from phasegate.testing import FakeClock
from support import RecordingServer

PIPELINE = """
[pipeline]
name = "orders"

[alerts.slack]
webhook_url = "{url}/services/T0/B0/SELFTESTSECRET"
min_severity = "critical"

[alerts.log]
min_severity = "warning"

[[phases]]
name = "extract"
processors = ["api"]
"""


def results_for(server: RecordingServer, clock: FakeClock) -> list[SinkResult]:
    return send_test_alert(loads_pipeline(PIPELINE.format(url=server.url)), clock=clock)


def test_the_test_alert_reaches_every_sink_whatever_its_minimum_severity(clock: FakeClock) -> None:
    """Slack (min critical) and the log sink each get one test alert and report delivered."""
    with RecordingServer() as server:
        results = results_for(server, clock)
    assert [(r.sink, r.delivered, r.error) for r in results] == [
        ("slack", True, None),
        ("log", True, None),
    ]
    [request] = server.requests
    message = request.json()
    assert "Test alert from phasegate for pipeline orders" in message["text"]
    assert "alert test" in json.dumps(message["attachments"][0]["blocks"][0])
    assert "SELFTESTSECRET" not in results[0].target


def test_a_webhook_failing_with_500_is_reported_after_its_retries(clock: FakeClock) -> None:
    """500 forever: slack is reported failed (HTTP 500, no secret) after 1 + 3 tries; log still delivers."""
    with RecordingServer((500, {}, b"rollup_error")) as server:
        slack, log = results_for(server, clock)
    assert not slack.delivered
    assert slack.error is not None
    assert "HTTP 500" in slack.error
    assert "SELFTESTSECRET" not in slack.error
    assert len(server.requests) == 4
    assert log.delivered


def test_a_429_is_retried_after_its_retry_after_and_then_delivered(clock: FakeClock) -> None:
    """429 with Retry-After: 7 → waits 7 s (on the injected clock), then delivered."""
    with RecordingServer() as server:
        server.responses = [(429, {"Retry-After": "7"}, b"rate_limited")]
        before = clock.monotonic()
        slack, _log = results_for(server, clock)
    assert slack.delivered
    assert len(server.requests) == 2
    assert clock.monotonic() - before >= 7.0


def test_an_alerters_sinks_can_be_tested_directly(clock: FakeClock) -> None:
    """send_test_alert(alerter) tries the running alerter's sinks, bypassing its queue."""
    sink = LogSink()
    alerter = Alerter([sink], clock=clock)
    try:
        [result] = send_test_alert(alerter, clock=clock)
    finally:
        alerter.close(1)
    assert result == SinkResult("log", "log", True, None, result.seconds)
    assert [a.title for a in sink.sent] == ["test alert"]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "phasegate.toml"
    monkeypatch.setenv("PHASEGATE_CONFIG", str(path))
    return path


def test_alert_test_exits_0_and_lists_each_sink_when_all_delivered(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text output names each sink and says delivered; JSON says the same; exit 0."""
    with RecordingServer() as server:
        config.write_text(PIPELINE.format(url=server.url))
        assert main(["alert", "test"]) == 0
        out = capsys.readouterr().out
        assert main(["alert", "test", "--format", "json"]) == 0
        data = json.loads(capsys.readouterr().out)
    assert "slack  slack:http://127.0.0.1" in out
    assert "/***: delivered" in out
    assert "test alert delivered by 2 of 2 sink(s)" in out
    assert data["delivered"] is True
    assert [(s["sink"], s["delivered"]) for s in data["sinks"]] == [("slack", True), ("log", True)]
    assert len(server.requests) == 2
    assert "SELFTESTSECRET" not in out + json.dumps(data)


def test_alert_test_exits_1_naming_the_sink_that_failed(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A webhook answering 403 is reported FAILED with its status; the log sink still delivered."""
    with RecordingServer((403, {}, b"invalid_token")) as server:
        config.write_text(PIPELINE.format(url=server.url))
        assert main(["alert", "test", "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["delivered"] is False
    slack, log = data["sinks"]
    assert not slack["delivered"]
    assert "HTTP 403: invalid_token" in slack["error"]
    assert log["delivered"]


def test_alert_test_without_sinks_is_a_configuration_error(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No [alerts] table: exit 2, and the message says what to add."""
    config.write_text('[pipeline]\nname = "o"\n[[phases]]\nname = "a"\nprocessors = ["x"]\n')
    assert main(["alert", "test"]) == 2
    assert "no alert sink is configured; add [alerts.slack]" in capsys.readouterr().err


def test_alert_without_an_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``phasegate alert`` alone prints usage and exits 2."""
    with pytest.raises(SystemExit) as exited:
        main(["alert"])
    assert exited.value.code == 2
    assert "test" in capsys.readouterr().err
