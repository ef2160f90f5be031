"""``phasegate serve`` as a process: it serves, refuses unsafe binds, stops cleanly on SIGTERM."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from phasegate.cli import main
from phasegate.config import loads_pipeline
from phasegate.service.server import GC_THRESHOLDS, settle_garbage_collector, unused_token_variable
from support import PIPELINE_TEXT, Harness, free_port

CONFIG = """
[pipeline]
name = "orders"

[stores]
primary = "sqlite:///{dir}/primary.db"
backup = "sqlite:///{dir}/backup.db"

[triggers]
transport = "log:{dir}/triggers.jsonl"

[[phases]]
name = "extract"
processors = ["api"]
next = "load"

[[phases]]
name = "load"
processors = ["warehouse"]
"""


def start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    config = tmp_path / "phasegate.toml"
    config.write_text(CONFIG.format(dir=tmp_path))
    port = free_port()
    command = [sys.executable, "-m", "phasegate.cli", "serve", "--config", str(config)]
    with (tmp_path / "serve.log").open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "--port", str(port), *extra],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env={**os.environ, "PHASEGATE_TOKEN": "t0ken-for-tests"},
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/livez", timeout=0.5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError((tmp_path / "serve.log").read_text() or "did not start")


@pytest.mark.slow
def test_serve_records_delivers_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """A completion over HTTP is recorded and delivered; SIGTERM exits 0; logs are JSON."""
    process, url = start(tmp_path)
    try:
        response = httpx.post(
            url + "/v1/completions",
            json={"phase": "extract", "run_key": "2026-01-28", "processor": "api"},
        )
        assert response.status_code == 202
        assert response.json()["claimed"] is True
        log = tmp_path / "triggers.jsonl"
        for _ in range(200):  # the file exists as soon as it is opened: wait for the line
            if log.exists() and log.read_text().endswith("\n"):
                break
            time.sleep(0.05)
        assert json.loads(log.read_text())["phase"] == "extract"
        assert main(["health", "--url", url]) == 0
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    stderr = (tmp_path / "serve.log").read_text()
    assert code == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("phasegate orders serving") for line in lines)
    assert any(
        line.get("event") == "trigger_delivered" and line.get("correlation_id") for line in lines
    )
    assert lines[-1]["message"] == "phasegate stopped"


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Binding 0.0.0.0 without [server] token is a usage error."""
    config = tmp_path / "phasegate.toml"
    config.write_text(CONFIG.format(dir=tmp_path))
    assert (
        main(["serve", "--config", str(config), "--host", "0.0.0.0", "--port", str(free_port())])
        == 2
    )
    assert "refusing to listen on 0.0.0.0 without a token" in capsys.readouterr().err


def test_health_command_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """Unreachable → 2 (healthy → 0 is covered with the real service above)."""
    assert main(["health", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "1"]) == 2
    assert "unreachable" in capsys.readouterr().err


def test_health_command_reports_degraded_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A 503 from /health is exit 1 and names the failing dependency."""
    from support import RecordingServer

    body = json.dumps(
        {
            "status": "degraded",
            "dependencies": {
                "primary_store": {"healthy": False, "latency_ms": 1.0, "error": "down"}
            },
        }
    ).encode()
    with RecordingServer((503, {"Content-Type": "application/json"}, body)) as server:
        assert main(["health", "--url", server.url]) == 1
    assert "primary_store      FAILING: down" in capsys.readouterr().out


def test_background_loops_run_threads_only_between_start_and_stop(harness: Harness) -> None:
    """Constructing the loops starts nothing; start() runs three threads; stop() ends them."""
    import threading

    from phasegate.service.server import BackgroundLoops

    names = {"phasegate-dispatcher", "phasegate-timeouts", "phasegate-reconciler"}

    def running() -> int:
        return sum(1 for t in threading.enumerate() if t.name in names)

    before = running()
    loops = BackgroundLoops(harness.runtime, timeout_interval=3600, reconcile_interval=3600)
    assert running() == before
    loops.start()
    assert running() == before + 3
    loops.stop(timeout=10)
    assert running() == before


def test_a_serving_process_freezes_what_startup_built_and_collects_less_often() -> None:
    """After startup the collector skips the startup objects and waits for 10,000 net
    allocations before collecting the youngest generation (it had collected several
    times per request at Python's default of 700)."""
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        settle_garbage_collector()
        assert gc.get_threshold() == GC_THRESHOLDS == (10_000, 10, 10)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_serve_warns_when_the_token_variable_is_set_but_not_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``export PHASEGATE_TOKEN=...`` without ``[server] token`` guards nothing: said at
    start, naming the line to add; silent when the file reads the variable, or when
    nothing is exported."""
    open_api = loads_pipeline(PIPELINE_TEXT)
    warning = unused_token_variable(open_api, {"PHASEGATE_TOKEN": "s3cret"})
    assert warning is not None
    assert 'token = "env:PHASEGATE_TOKEN"' in warning
    assert "s3cret" not in warning
    assert unused_token_variable(open_api, {}) is None
    monkeypatch.setenv("PHASEGATE_TOKEN", "s3cret")  # read when the file is loaded
    guarded = loads_pipeline(PIPELINE_TEXT + '\n[server]\ntoken = "env:PHASEGATE_TOKEN"\n')
    assert unused_token_variable(guarded, {"PHASEGATE_TOKEN": "s3cret"}) is None
