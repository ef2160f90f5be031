"""The command line: each command, its output formats and the exit codes scripts rely on."""

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
transport = "{transport}"

[resilience]
retry_attempts = 1
delivery_attempts = 1

[[phases]]
name = "extract"
processors = ["api", "files"]
next = "load"
timeout = "1s"

[[phases]]
name = "load"
processors = ["warehouse"]
"""


def write_config(tmp_path: Path, transport: str | None = None) -> Path:
    path = tmp_path / "phasegate.toml"
    path.write_text(
        PIPELINE.format(dir=tmp_path, transport=transport or f"log:{tmp_path}/triggers.jsonl")
    )
    return path


def run(
    capsys: pytest.CaptureFixture[str], *args: str, clock: FakeClock | None = None
) -> tuple[int, str, str]:
    code = main(list(args), clock=clock)
    out, err = capsys.readouterr()
    return code, out, err


def test_complete_records_and_delivers_the_trigger_it_caused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0; the last report prints the trigger and the log transport holds its line."""
    config = str(write_config(tmp_path))
    base = ["complete", "--config", config, "--phase", "extract", "--run-key", "2026-01-28"]
    code, out, _ = run(capsys, *base, "--processor", "api")
    assert code == 0
    assert "recorded extract/api success for 2026-01-28" in out
    code, out, _ = run(capsys, *base, "--processor", "files", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["claimed"] is True
    assert data["delivery"] == "delivered"
    [line] = (tmp_path / "triggers.jsonl").read_text().splitlines()
    assert json.loads(line)["trigger_id"] == data["trigger_id"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--processor", "ghost"], "processor: 'ghost' is not expected"),
        (["--processor", "api", "--status", "meh"], "status: 'meh'"),
        (["--processor", "api", "--metadata", "{not json"], "metadata: not valid JSON"),
        (["--processor", "api", "--metadata", "[1]"], "metadata: expected a JSON object"),
    ],
)
def test_complete_rejects_bad_input_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    """A rejected report exits 1 and says which field was wrong."""
    config = str(write_config(tmp_path))
    code, _, err = run(
        capsys,
        "complete",
        "--config",
        config,
        "--phase",
        "extract",
        "--run-key",
        "2026-01-28",
        *extra,
    )
    assert code == 1
    assert message in err


def test_complete_from_file_records_each_line_on_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``complete --from-file``: good lines recorded and their triggers delivered, a bad
    line (unknown phase, not JSON) rejected with its line number; exit 1."""
    config = str(write_config(tmp_path))
    reports = tmp_path / "reports.jsonl"
    reports.write_text(
        '{"phase": "extract", "run_key": "2026-01-28", "processor": "api"}\n'
        "\n"
        '{"phase": "extract", "run_key": "2026-01-28", "processor": "files"}\n'
        '{"phase": "nope", "run_key": "2026-01-28", "processor": "api"}\n'
        "{not json\n"
        '{"phase": "extract", "run_key": "2026-01-29", "processor": "api", '
        '"metadata": {"rows": 3}}\n'
    )
    code, out, _ = run(capsys, "complete", "--config", config, "--from-file", str(reports))
    assert code == 1
    assert "rejected line 4: phase: unknown phase 'nope'" in out
    assert "rejected line 5: line: not valid JSON" in out
    assert "recorded 3 of 5 report(s)" in out
    [line] = (tmp_path / "triggers.jsonl").read_text().splitlines()
    trigger_id = json.loads(line)["trigger_id"]
    assert f"trigger {trigger_id} delivered" in out
    # Sent again: every report is a duplicate now, answered the same way.
    code, out, _ = run(
        capsys, "complete", "--config", config, "--from-file", str(reports), "--format", "json"
    )
    data = json.loads(out)
    assert (code, data["recorded"], data["rejected"]) == (1, 3, 2)
    assert [(r["line"], r["ok"]) for r in data["results"]] == [
        (1, True),
        (3, True),
        (4, False),
        (5, False),
        (6, True),
    ]
    assert data["results"][1]["trigger_id"] == trigger_id
    assert data["results"][3]["error"]["code"] == "malformed_json"
    assert len((tmp_path / "triggers.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from-file", "missing.jsonl"], "--from-file missing.jsonl: cannot read it"),
        (["--from-file", "-", "--phase", "extract"], "drop --phase"),
        (["--phase", "extract"], "complete needs --run-key, --processor (or --from-file FILE)"),
    ],
)
def test_complete_says_which_arguments_are_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Without a report, or with both a file and a report, or an unreadable file: exit 2."""
    config = str(write_config(tmp_path))
    code, _, err = run(capsys, "complete", "--config", config, *args)
    assert code == 2
    assert message in err


def test_complete_exits_3_when_both_stores_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With neither store writable nothing is recorded and the exit code is 3."""
    config = write_config(tmp_path)
    (tmp_path / "primary.db").mkdir()
    (tmp_path / "backup.db").mkdir()
    code, _, err = run(
        capsys,
        "complete",
        "--config",
        str(config),
        "--phase",
        "extract",
        "--run-key",
        "2026-01-28",
        "--processor",
        "api",
    )
    assert code == 3
    assert "both stores failed" in err


def test_a_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken pipeline file is a usage error, named."""
    path = tmp_path / "bad.toml"
    path.write_text("[pipeline]\nname = 'x'\n")
    code, _, err = run(capsys, "status", "--config", str(path))
    assert code == 2
    assert "phases: is required" in err


def test_status_prints_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Status lists each phase's state, succeeded and missing processors and the trigger."""
    config = str(write_config(tmp_path))
    run(
        capsys,
        "complete",
        "--config",
        config,
        "--phase",
        "extract",
        "--run-key",
        "2026-01-28",
        "--processor",
        "api",
    )
    code, out, _ = run(capsys, "status", "--config", config, "2026-01-28")
    assert code == 0
    assert "extract" in out
    assert "missing: files" in out
    code, out, _ = run(capsys, "status", "--config", config, "--format", "json")
    [run_data] = json.loads(out)["runs"]
    extract, load = run_data["phases"]
    assert (extract["state"], extract["succeeded"], extract["missing"]) == (
        "waiting",
        ["api"],
        ["files"],
    )
    assert (load["state"], load["trigger"]) == ("not_started", None)


def test_a_failed_delivery_stays_pending_and_dispatch_delivers_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """complete exits 0 with the trigger pending; dispatch later delivers the same id."""
    with RecordingServer((503, {}, b"busy")) as server:
        config = str(write_config(tmp_path, server.url + "/hook"))
        base = ["complete", "--config", config, "--phase", "extract", "--run-key", "2026-01-28"]
        run(capsys, *base, "--processor", "api")
        code, out, _ = run(capsys, *base, "--processor", "files")
        assert code == 0
        assert "pending" in out
        code, out, _ = run(capsys, "dispatch", "--config", config)
        assert code == 1
        assert "still pending" in out
        server.default = (200, {}, b"ok")
        code, out, _ = run(capsys, "dispatch", "--config", config, "--format", "json")
        assert code == 0, out
        assert len(json.loads(out)["delivered"]) == 1
    keys = {r.headers["Idempotency-Key"] for r in server.requests}
    assert len(keys) == 1


def test_manual_trigger_and_check_timeouts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clock: FakeClock
) -> None:
    """A phase past its timeout is reported (exit 1); a manual trigger still happens once."""
    config = str(write_config(tmp_path))
    run(
        capsys,
        "complete",
        "--config",
        config,
        "--phase",
        "extract",
        "--run-key",
        "2026-01-28",
        "--processor",
        "api",
        clock=clock,
    )
    clock.advance(1.1)
    code, out, _ = run(
        capsys, "check-timeouts", "--config", config, "--format", "json", clock=clock
    )
    assert code == 1
    [finding] = json.loads(out)["timed_out"]
    assert (finding["phase"], finding["missing"], finding["first_report"]) == (
        "extract",
        ["files"],
        True,
    )
    code, out, _ = run(
        capsys, "check-timeouts", "--config", config, "--format", "json", clock=clock
    )
    assert json.loads(out)["timed_out"][0]["first_report"] is False
    code, out, _ = run(
        capsys,
        "trigger",
        "--config",
        config,
        "--phase",
        "extract",
        "--run-key",
        "2026-01-28",
        "--format",
        "json",
    )
    data = json.loads(out)
    assert (code, data["claimed"], data["reason"], data["delivery"]) == (
        0,
        True,
        "manual",
        "delivered",
    )
    code, out, _ = run(
        capsys, "trigger", "--config", config, "--phase", "extract", "--run-key", "2026-01-28"
    )
    assert "already triggered" in out


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` works on the program and on each command."""
    for command in (
        [],
        ["demo"],
        ["complete"],
        ["dispatch"],
        ["trigger"],
        ["status"],
        ["check-timeouts"],
    ):
        with pytest.raises(SystemExit) as info:
            main([*command, "--help"])
        assert info.value.code == 0
    assert "usage: phasegate" in capsys.readouterr().out


@pytest.mark.slow
def test_the_demo_passes_its_own_checks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``phasegate demo`` finishes with every check passing, exit 0."""
    code, out, _ = run(capsys, "demo", "--runs", "2", "--seed", "3", "--state-dir", str(tmp_path))
    assert code == 0, out
    assert "all checks passed" in out
    assert "FAIL" not in out
    assert (tmp_path / "triggers.jsonl").exists()
