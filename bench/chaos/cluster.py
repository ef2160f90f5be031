"""A private PostgreSQL cluster for the primary (stopped hard on demand) and a backup schema."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("PHASEGATE_CHAOS_PG_BIN", "/usr/local/bin"))
SHARED_PG_URL = os.environ.get("PHASEGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """``initdb`` into a temp dir and ``pg_ctl`` on a free port, trust auth, loopback only.

    Run as root, the cluster runs as the ``postgres`` OS user (PostgreSQL refuses root).
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="phasegate-chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.running = False
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.root.chmod(0o700)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        """The phasegate store URL of the cluster's ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [*self._as_user, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(argv[0]).name} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )

    def init(self) -> None:
        """Create the cluster (no fsync during initdb: it is thrown away at the end)."""
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "120", "start",
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "immediate") -> None:
        """Stop it (``immediate``: as hard as a crash, crash recovery on the next start)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def destroy(self) -> None:
        """Stop it if it runs and delete every file; safe to call twice."""
        if self.running:
            with contextlib.suppress(Exception):
                self.stop("immediate")
        if self.data.exists() and (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class BackupSchema:
    """A fresh schema in the shared PostgreSQL, dropped at the end."""

    def __init__(self, admin_url: str = SHARED_PG_URL) -> None:
        self.admin_url = admin_url
        self.name = f"chaos_{uuid.uuid4().hex[:10]}"

    @property
    def url(self) -> str:
        """The phasegate store URL of the schema."""
        joiner = "&" if "?" in self.admin_url else "?"
        return f"{self.admin_url}{joiner}schema={self.name}"

    def drop(self) -> None:
        """Drop the schema and everything in it."""
        for _ in range(3):
            try:
                with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
                return
            except psycopg.Error:
                time.sleep(1)
