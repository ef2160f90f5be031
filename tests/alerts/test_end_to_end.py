"""Alerts from the command line, against a local stand-in for Slack's webhook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phasegate.cli import main
from phasegate.testing import FakeClock
from support import RecordingServer

PIPELINE = """
[pipeline]
name = "orders"

[stores]
primary = "sqlite:///{dir}/primary.db"
backup = "sqlite:///{dir}/backup.db"

[triggers]
transport = "log:{dir}/triggers.jsonl"

[alerts.slack]
webhook_url = "env:TEST_SLACK_WEBHOOK"

[[phases]]
name = "extract"
processors = ["api", "files", "ftp"]
next = "load"
timeout = "1s"

[[phases]]
name = "load"
processors = ["warehouse"]
"""


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> RecordingServer:
    with RecordingServer() as server:
        monkeypatch.setenv("TEST_SLACK_WEBHOOK", server.url + "/services/T1/B1/HUSHHUSH")
        (tmp_path / "phasegate.toml").write_text(PIPELINE.format(dir=tmp_path))
        monkeypatch.setenv("PHASEGATE_CONFIG", str(tmp_path / "phasegate.toml"))
        yield server


def test_a_timed_out_phase_alerts_once_across_runs_of_check_timeouts(
    slack: RecordingServer, capsys: pytest.CaptureFixture[str], clock: FakeClock
) -> None:
    """check-timeouts → one warning naming the missing processor; run again → no second alert."""
    for processor in ("api", "files"):
        assert (
            main(
                [
                    "complete",
                    "--phase",
                    "extract",
                    "--run-key",
                    "2026-01-28",
                    "--processor",
                    processor,
                ],
                clock=clock,
            )
            == 0
        )
    assert slack.requests == []
    clock.advance(1.1)
    assert main(["check-timeouts"], clock=clock) == 1
    [request] = slack.requests
    message = request.json()
    assert message["attachments"][0]["color"] == "#F2A900"
    assert "missing: ftp" in json.dumps(message)
    assert "timed out" in message["text"]
    assert main(["check-timeouts"], clock=clock) == 1
    assert len(slack.requests) == 1
    out, err = capsys.readouterr()
    assert "HUSHHUSH" not in out + err


def test_summary_prints_and_sends_the_run(
    slack: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """summary prints each phase; --send posts it as Block Kit to the webhook."""
    for processor in ("api", "files", "ftp"):
        main(
            ["complete", "--phase", "extract", "--run-key", "2026-01-28", "--processor", processor]
        )
    main(
        [
            "complete",
            "--phase",
            "load",
            "--run-key",
            "2026-01-28",
            "--processor",
            "warehouse",
            "--status",
            "failed",
        ]
    )
    capsys.readouterr()
    slack.requests.clear()
    assert main(["summary", "--run-key", "2026-01-28", "--send"]) == 0
    out, err = capsys.readouterr()
    assert "orders run 2026-01-28: 1/2 phases triggered" in out
    assert "extract: triggered at" in out
    assert "load: waiting; failed: warehouse; missing: warehouse" in out
    assert "summary sent to Slack" in err
    summaries = [r.json() for r in slack.requests if "blocks" in r.json()]
    [posted] = summaries
    assert posted["blocks"][0]["type"] == "header"
    assert "1/2 phases triggered" in posted["blocks"][0]["text"]["text"]
    assert main(["summary", "--run-key", "2026-01-28", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert [p["state"] for p in data["phases"]] == ["triggered", "waiting"]


def test_summary_send_without_slack_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--send needs a webhook."""
    config = tmp_path / "p.toml"
    config.write_text(
        PIPELINE.format(dir=tmp_path).split("[alerts.slack]")[0]
        + PIPELINE.split('webhook_url = "env:TEST_SLACK_WEBHOOK"')[1].format(dir=tmp_path)
    )
    assert main(["summary", "--config", str(config), "--run-key", "2026-01-28", "--send"]) == 2
    assert "--send needs [alerts.slack]" in capsys.readouterr().err
