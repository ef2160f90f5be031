"""Private Firestore and BigQuery emulators on free loopback ports, for the tests and bench.

Firestore is Google's own emulator (a Java jar in the Google Cloud SDK's ``platform/``
folder); BigQuery is ``bqemulator`` from PyPI, whose DuckDB needs the ``spatial``
extension, installed here from the ``duckdb-extension-spatial`` wheel's file since
DuckDB cannot download extensions on this machine. Under ``CI=true`` a missing emulator
fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
STARTUP_SECONDS = 60.0
FIRESTORE_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
_DEFAULT_SDK_ROOTS = ("/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk")


class EmulatorMissing(RuntimeError):
    """What an emulator needs (java, the SDK, bqemulator) is not installed."""


def missing(name: str, reason: str) -> None:
    """Skip on a laptop, fail under CI=true: an emulator the suite needs is not there."""
    message = f"the {name} emulator cannot run here: {reason}"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it (.ci/run installs what it needs)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts connections on ``127.0.0.1:port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
            return bool(response.status)
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


@functools.cache
def gcloud_sdk_root() -> Path | None:
    """The Google Cloud SDK root (``gcloud info``), or a usual install folder, or None."""
    override = os.environ.get("PHASEGATE_GCLOUD_SDK_ROOT")
    if override:
        return Path(override)
    gcloud = shutil.which("gcloud")
    if gcloud:
        try:
            answer = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            answer = None
        if answer is not None and answer.returncode == 0 and answer.stdout.strip():
            return Path(answer.stdout.strip())
    for root in _DEFAULT_SDK_ROOTS:
        if Path(root).is_dir():
            return Path(root)
    return None


class _Process:
    """A child process we started, with its log file, stopped by its own process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, *, hard: bool = False) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL if hard else signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.unlink(missing_ok=True)


def _wait_ready(process: _Process, url: str, port: int) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited at startup:\n{process.tail()}")
        if port_open(port) and _http_answers(url):
            return
        time.sleep(0.05)
    log = process.tail()
    process.stop()
    raise RuntimeError(f"{process.name} did not answer on {url} in {STARTUP_SECONDS}s:\n{log}")


class FirestoreEmulator:
    """Google's Firestore emulator on a private port; its data lives in memory only."""

    def __init__(self, port: int | None = None) -> None:
        java = shutil.which("java")
        if java is None:
            raise EmulatorMissing("java is not installed (apt-get install default-jre-headless)")
        root = gcloud_sdk_root()
        if root is None:
            raise EmulatorMissing("the Google Cloud SDK (gcloud) is not installed")
        self.jar = root / "platform" / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
        if not self.jar.is_file():
            raise EmulatorMissing(
                f"{self.jar} is missing (gcloud components install cloud-firestore-emulator)"
            )
        self.java = java
        self.port = port or free_port()
        self._process: _Process | None = None

    @property
    def host(self) -> str:
        """``host:port``, the value of ``FIRESTORE_EMULATOR_HOST``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> FirestoreEmulator:
        """Start the emulator and wait (bounded) until it answers over HTTP."""
        argv = [
            self.java,
            "-cp",
            str(self.jar),
            FIRESTORE_MAIN,
            "start",
            "--host=127.0.0.1",
            f"--port={self.port}",
        ]
        self._process = _Process("firestore-emulator", argv)
        _wait_ready(self._process, f"http://{self.host}/", self.port)
        # The JVM serves its first document request slowly: take that hit here, once.
        _http_answers(f"http://{self.host}/v1/projects/warm-up/databases/(default)/documents/w/w")
        return self

    def stop(self) -> None:
        """Stop the emulator (idempotent)."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def kill(self) -> None:
        """Kill the emulator at once, losing its data, as a crashed database would."""
        if self._process is not None:
            self._process.stop(hard=True)
            self._process = None

    def restart_empty(self) -> None:
        """Kill the emulator (data lost) and start a new, empty one on the same port."""
        self.kill()
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.start()

    def clear(self, project: str) -> None:
        """Delete every document of ``project``'s default database."""
        request = urllib.request.Request(
            f"http://{self.host}/emulator/v1/projects/{project}/databases/(default)/documents",
            method="DELETE",
        )
        with urllib.request.urlopen(request, timeout=10):  # loopback only
            return

    def __enter__(self) -> FirestoreEmulator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def spatial_extension_file() -> Path:
    """The spatial extension shipped in the ``duckdb-extension-spatial`` wheel."""
    import duckdb

    spec = importlib.util.find_spec("duckdb_extension_spatial")
    if spec is None or spec.origin is None:
        raise EmulatorMissing(
            "duckdb-extension-spatial is not installed (pip install -e '.[gcp-test]')"
        )
    folder = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}"
    found = folder / "spatial.duckdb_extension"
    if not found.is_file():
        raise EmulatorMissing(
            f"{found} is missing: duckdb and duckdb-extension-spatial differ in version"
        )
    return found


def install_spatial_extension() -> None:
    """Install DuckDB's spatial extension from the wheel's file (no download; idempotent)."""
    import duckdb

    connection = duckdb.connect()
    try:
        installed = connection.execute(
            "SELECT installed FROM duckdb_extensions() WHERE extension_name = 'spatial'"
        ).fetchone()
        if not (installed and installed[0]):
            connection.install_extension(str(spatial_extension_file()))
        connection.load_extension("spatial")
    finally:
        connection.close()


class BigQueryEmulator:
    """``bqemulator`` (REST and gRPC) on private ports, in memory."""

    def __init__(self, project: str = "phasegate-test") -> None:
        if importlib.util.find_spec("bqemulator") is None:
            raise EmulatorMissing("bqemulator is not installed (pip install -e '.[gcp-test]')")
        self.project = project
        self.port = free_port()
        self._process: _Process | None = None

    @property
    def host(self) -> str:
        """``host:port``, the value of ``BIGQUERY_EMULATOR_HOST``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> BigQueryEmulator:
        """Install the spatial extension, start the emulator, wait until it lists datasets."""
        install_spatial_extension()
        argv = [
            sys.executable,
            "-m",
            "bqemulator",
            "start",
            "--rest-host=127.0.0.1",
            f"--rest-port={self.port}",
            "--grpc-host=127.0.0.1",
            "--grpc-port=0",
            f"--project={self.project}",
            "--ephemeral",
            "--log-level=warning",
        ]
        self._process = _Process("bigquery-emulator", argv)
        _wait_ready(
            self._process,
            f"http://{self.host}/bigquery/v2/projects/{self.project}/datasets",
            self.port,
        )
        return self

    def stop(self) -> None:
        """Stop the emulator (idempotent)."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def __enter__(self) -> BigQueryEmulator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_emulator(name: str, build: Callable[[], Any]) -> Any:
    """Start an emulator; skip on a laptop without it, fail under CI=true."""
    try:
        return build().start()
    except EmulatorMissing as exc:
        missing(name, str(exc))
    except RuntimeError as exc:
        pytest.fail(f"the {name} emulator did not start: {exc}")
