"""A dispatcher killed with SIGKILL between claim and delivery loses nothing (guarantee 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from phasegate.stores.sql import SqlStore
from support import RecordingServer

CONFIG = """
[pipeline]
name = "orders"

[stores]
primary = "sqlite:///{dir}/primary.db"
backup = "sqlite:///{dir}/backup.db"

[triggers]
transport = "{url}/hook"

[[phases]]
name = "extract"
processors = ["api", "files"]
next = "load"

[[phases]]
name = "load"
processors = ["warehouse"]
"""


def phasegate(*args: str) -> list[str]:
    return [sys.executable, "-m", "phasegate.cli", *args]


@pytest.mark.slow
def test_a_trigger_whose_dispatcher_was_killed_goes_out_after_restart(tmp_path: Path) -> None:
    """kill -9 while the trigger is in flight; a restarted dispatcher delivers the same id."""
    in_flight = threading.Event()
    with RecordingServer() as server:
        server.responses = [in_flight]  # hold the first delivery until the sender is dead
        config = tmp_path / "phasegate.toml"
        config.write_text(CONFIG.format(dir=tmp_path, url=server.url))
        env = {**os.environ, "PHASEGATE_CONFIG": str(config)}
        common = ["--phase", "extract", "--run-key", "2026-01-28"]
        subprocess.run(
            phasegate("complete", *common, "--processor", "api"), check=True, env=env, timeout=60
        )
        process = subprocess.Popen(
            phasegate("complete", *common, "--processor", "files"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert server.received.wait(60), "the trigger never reached the receiver"
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL

        store = SqlStore(f"sqlite:///{tmp_path}/primary.db", pipeline="orders")
        later = datetime.now(UTC) + timedelta(days=1)
        [pending] = store.pending_triggers(later)
        claimed_id = pending.trigger.trigger_id

        in_flight.set()
        restarted = subprocess.run(
            phasegate("dispatch", "--format", "json"),
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert restarted.returncode == 0, restarted.stderr
        assert store.pending_triggers(later) == []
        [entry] = store.triggers("2026-01-28")
        assert entry.delivered_at is not None
        store.close()
    keys = [request.headers["Idempotency-Key"] for request in server.requests]
    assert keys == [claimed_id, claimed_id]
    assert server.requests[-1].json()["trigger_id"] == claimed_id
