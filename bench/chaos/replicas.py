"""The ``phasegate serve`` replicas: pipeline files, processes, SIGKILL and restart."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from chaos.cluster import free_port

PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("phase2", ("boxscores", "gamebook", "odds_props", "injuries")),
    ("phase3", ("player_summary", "team_offense", "team_defense")),
    ("phase4", ("features", "daily_cache", "zone_analysis")),
    ("phase5", ("predictions", "confidence")),
    ("phase6", ("export", "publish")),
)
PIPELINE_NAME = "chaos"
RUN_KEY_PATTERN = r"^run-\d{6}$"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the replicas write and send: both stores, the trigger receiver, the webhook."""

    primary: str
    backup: str
    receiver: str
    slack: str


@dataclass(frozen=True, slots=True)
class Intervals:
    """How often each replica sweeps (claims what is complete, checks timeouts) and
    reconciles its recent runs."""

    sweep: str = "5s"
    reconcile: str = "30s"


def pipeline_text(endpoints: Endpoints, sender: str, intervals: Intervals = Intervals()) -> str:
    """The pipeline file of one replica (``sender`` names it in trigger and alert URLs)."""
    lines = [
        "[pipeline]",
        f'name = "{PIPELINE_NAME}"',
        f"run_key_pattern = '{RUN_KEY_PATTERN}'",
        "",
        "[stores]",
        f'primary = "{endpoints.primary}"',
        f'backup = "{endpoints.backup}"',
        "",
        "[triggers]",
        f'transport = "{endpoints.receiver}/deliver/{sender}"',
        "",
        "[server]",
        'token = "env:PHASEGATE_TOKEN"',
        'health_cache = "1s"',
        f'timeout_check_interval = "{intervals.sweep}"',
        f'reconcile_interval = "{intervals.reconcile}"',
        "",
        "[resilience]",
        'retry_base = "100ms"',
        'primary_max_delay = "1s"',
        'backup_max_delay = "1s"',
        'breaker_reset = "2s"',
        'redelivery_base = "1s"',
        'claim_fallback = "defer"',
        "",
        "[alerts.slack]",
        f'webhook_url = "{endpoints.slack}/slack/{sender}"',
        'min_severity = "warning"',
        'repeat_interval = "1m"',
    ]
    for index, (phase, processors) in enumerate(PHASES):
        lines += ["", "[[phases]]", f'name = "{phase}"']
        lines.append("processors = [" + ", ".join(f'"{p}"' for p in processors) + "]")
        if index + 1 < len(PHASES):
            lines.append(f'next = "{PHASES[index + 1][0]}"')
    return "\n".join(lines) + "\n"


def phasegate_command() -> list[str]:
    """How to start the ``phasegate`` CLI of this interpreter's environment."""
    script = Path(sys.executable).with_name("phasegate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "phasegate.cli"]


class Replica:
    """One ``phasegate serve`` process on a fixed loopback port, in its own process group."""

    def __init__(
        self, name: str, workdir: Path, endpoints: Endpoints, token: str, intervals: Intervals
    ) -> None:
        self.name = name
        self.port = free_port()
        self.config = workdir / f"{name}.toml"
        self.config.write_text(pipeline_text(endpoints, name, intervals))
        self.log = workdir / f"{name}.log"
        self.env = {**os.environ, "PHASEGATE_TOKEN": token}
        self.process: subprocess.Popen[bytes] | None = None
        self.kills: list[float] = []
        self.starts = 0

    @property
    def url(self) -> str:
        """The replica's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: float = 60.0) -> None:
        """Start the process and wait until ``/livez`` answers."""
        self.launch()
        self.wait_ready(wait)

    def launch(self) -> None:
        """Start the process without waiting for it."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*phasegate_command(), "--log-level", "WARNING", "serve", "--config",
                 str(self.config), "--port", str(self.port)],
                env=self.env, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        self.starts += 1

    def wait_ready(self, wait: float = 60.0) -> None:
        """Wait until ``/livez`` answers."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited at start; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/livez", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"replica {self.name} did not answer /livez within {wait:.0f}s")

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self.kills.append(time.monotonic())
        self.process = None

    def terminate(self) -> None:
        """Send SIGTERM: the service drains, delivers its queued alerts and exits."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM (drain, deliver queued alerts), SIGKILL after ``timeout``."""
        if self.process is None:
            return
        self.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self.process = None
