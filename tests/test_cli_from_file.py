"""``phasegate complete --from-file`` and ``phasegate dispatch`` on files and outboxes
larger than a page: every line answered on its own, every trigger delivered."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from phasegate.cli import records
from phasegate.config import load_pipeline
from phasegate.errors import BothStoresFailed
from phasegate.orchestrator import Orchestrator
from phasegate.runtime import open_runtime
from phasegate.transports.log import LogTransport
from test_cli import run, write_config


def _keys(count: int) -> list[str]:
    return [(date(2026, 1, 1) + timedelta(days=day)).isoformat() for day in range(count)]


def _line(run_key: str, processor: str, **extra: Any) -> str:
    return json.dumps({"phase": "extract", "run_key": run_key, "processor": processor, **extra})


def _delivered(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "triggers.jsonl").read_text().splitlines()
    return [json.loads(line)["trigger_id"] for line in lines]


def test_a_file_that_completes_more_phases_than_a_page_delivers_every_trigger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """250 phase-runs completed by one file (the dispatcher reads 100 at a time): all 250
    triggers delivered before the command exits, none left pending."""
    config = str(write_config(tmp_path))
    reports = tmp_path / "reports.jsonl"
    reports.write_text(
        "".join(f"{_line(key, p)}\n" for key in _keys(250) for p in ("api", "files"))
    )
    code, out, _ = run(
        capsys, "complete", "--config", config, "--from-file", str(reports), "--format", "json"
    )
    data = json.loads(out)
    assert (code, data["recorded"], data["rejected"]) == (0, 500, 0)
    assert len(data["deliveries"]) == 250
    assert set(data["deliveries"].values()) == {"delivered"}
    assert sorted(_delivered(tmp_path)) == sorted(data["deliveries"])
    code, out, _ = run(capsys, "dispatch", "--config", config)
    assert (code, out.strip()) == (0, "0 delivered, 0 still pending")


def test_dispatch_delivers_an_outbox_longer_than_a_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """230 triggers claimed and left pending (by a library caller that did not deliver):
    ``phasegate dispatch`` delivers all of them and says so."""
    config = write_config(tmp_path)
    pipeline = load_pipeline(config)
    runtime = open_runtime(pipeline, transport=LogTransport(tmp_path / "unused.jsonl"))
    try:
        items = runtime.orchestrator.record_completions(
            [
                {"phase": "extract", "run_key": k, "processor": p}
                for k in _keys(230)
                for p in ("api", "files")
            ]
        )
    finally:
        runtime.close()
    assert sum(1 for i in items if i.result is not None and i.result.claimed) == 230
    code, out, _ = run(capsys, "dispatch", "--config", str(config))
    assert code == 0
    assert out.splitlines()[-1] == "230 delivered, 0 still pending"
    assert len(set(_delivered(tmp_path))) == 230


def test_stores_failing_midway_through_a_file_name_the_lines_not_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second batch of a file meets both stores down: exit 3 naming the lines not
    recorded; the first batch's lines are answered and its trigger is delivered."""
    config = str(write_config(tmp_path))
    monkeypatch.setattr(records, "FILE_BATCH", 2)
    calls = [0]
    real = Orchestrator.record_completions

    def second_fails(self: Orchestrator, reports: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise BothStoresFailed("record completions", OSError("disk"), OSError("disk"))
        return real(self, reports)

    monkeypatch.setattr(Orchestrator, "record_completions", second_fails)
    reports = tmp_path / "reports.jsonl"
    reports.write_text(
        _line("2026-01-28", "api") + "\n" + _line("2026-01-28", "files") + "\n"
        "{not json\n" + _line("2026-01-29", "api") + "\n" + _line("2026-01-29", "files") + "\n"
    )
    code, out, err = run(capsys, "complete", "--config", config, "--from-file", str(reports))
    assert code == 3
    assert "rejected line 3: line: not valid JSON" in out
    assert "recorded 2 of 5 report(s)" in out
    [trigger_id] = _delivered(tmp_path)
    assert f"trigger {trigger_id} delivered" in out
    assert "both stores failed" in err
    assert "lines 4 to 5 (2 report(s)) were not recorded" in err


def test_stores_failing_on_the_first_batch_exit_3_as_for_one_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing recorded at all: the usual one-line error, exit 3."""
    config = write_config(tmp_path)
    (tmp_path / "primary.db").mkdir()
    (tmp_path / "backup.db").mkdir()
    reports = tmp_path / "reports.jsonl"
    reports.write_text(_line("2026-01-28", "api") + "\n")
    code, out, err = run(capsys, "complete", "--config", str(config), "--from-file", str(reports))
    assert (code, out) == (3, "")
    assert err.splitlines()[-1].startswith("stores unavailable:")


def test_each_line_is_read_on_its_own_whatever_it_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A byte order mark, CRLF, U+2028 and U+0085 inside strings (lines end at \\n only),
    a line that is not UTF-8 and one nested too deeply for the parser: the bad lines are
    rejected with their numbers, every good one is recorded."""
    config = str(write_config(tmp_path))
    deep = "[" * 100_000 + "]" * 100_000
    text = (
        "\ufeff"
        + _line("2026-01-28", "api", metadata={"note": "a\u2028b"})
        + "\r\n"
        + deep
        + "\n"
        + _line("2026-01-28", "files", metadata={"note": "x\x85y"})
        + "\n"
    )
    data = text.encode("utf-8") + b'{"phase": "extract", "run_key": "\xff"}\n'
    data += _line("2026-01-29", "api").encode("utf-8")  # no newline at the end
    reports = tmp_path / "reports.jsonl"
    reports.write_bytes(data)
    code, out, _ = run(capsys, "complete", "--config", config, "--from-file", str(reports))
    assert code == 1
    assert "rejected line 2: line: not valid JSON: nested too deeply" in out
    assert "rejected line 4: line: not valid UTF-8" in out
    assert "recorded 3 of 5 report(s)" in out
    assert len(_delivered(tmp_path)) == 1


def test_a_report_option_beside_from_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--status`` would be silently ignored with a file: refused, as ``--phase`` is."""
    config = str(write_config(tmp_path))
    code, _, err = run(
        capsys, "complete", "--config", config, "--from-file", "-", "--status", "failed"
    )
    assert code == 2
    assert err.strip() == "usage error: --from-file takes the reports from the file; drop --status"


def test_a_delivery_that_cannot_read_the_outbox_leaves_recorded_lines_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lines were recorded and their trigger claimed, then reading the outbox to
    deliver it failed: the lines are reported recorded (exit 0) and the trigger pending,
    saying why; ``dispatch`` delivers it later."""
    from phasegate.dispatch import Dispatcher

    config = str(write_config(tmp_path))
    real = Dispatcher.run_once

    def outbox_down(self: Dispatcher, only: Any = None, **kwargs: Any) -> Any:
        if only is not None:
            raise BothStoresFailed("read pending triggers", OSError("gone"), OSError("gone"))
        return real(self, only, **kwargs)

    monkeypatch.setattr(Dispatcher, "run_once", outbox_down)
    reports = tmp_path / "reports.jsonl"
    reports.write_text(_line("2026-01-28", "api") + "\n" + _line("2026-01-28", "files") + "\n")
    code, out, _ = run(capsys, "complete", "--config", config, "--from-file", str(reports))
    assert code == 0
    assert "recorded 2 of 2 report(s)" in out
    assert "pending (reading the outbox failed: read pending triggers: both stores failed" in out
    monkeypatch.setattr(Dispatcher, "run_once", real)
    code, out, _ = run(capsys, "dispatch", "--config", config)
    assert (code, out.splitlines()[-1]) == (0, "1 delivered, 0 still pending")


def test_dispatch_that_stops_early_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second read of a long outbox fails: ``dispatch`` reports what it delivered,
    says it stopped early, and exits 1 (not "0 still pending")."""
    from phasegate.tracker import CompletionTracker

    config = write_config(tmp_path)
    runtime = open_runtime(load_pipeline(config), transport=LogTransport(tmp_path / "no.jsonl"))
    try:
        runtime.orchestrator.record_completions(
            [
                {"phase": "extract", "run_key": k, "processor": p}
                for k in _keys(130)
                for p in ("api", "files")
            ]
        )
    finally:
        runtime.close()
    reads = [0]
    real = CompletionTracker.pending_triggers

    def second_fails(self: CompletionTracker, now: Any, limit: int = 100) -> Any:
        reads[0] += 1
        if reads[0] == 2:
            raise BothStoresFailed("read pending triggers", OSError("gone"), OSError("gone"))
        return real(self, now, limit)

    monkeypatch.setattr(CompletionTracker, "pending_triggers", second_fails)
    code, out, _ = run(capsys, "dispatch", "--config", str(config))
    assert code == 1
    lines = out.splitlines()
    assert lines[-2] == "100 delivered, 0 still pending"
    assert lines[-1].startswith("stopped early: reading the outbox failed")
