"""A private Google Pub/Sub emulator on a free loopback port, for the Pub/Sub tests.

The emulator ships with the Google Cloud CLI (``<sdk_root>/platform/pubsub-emulator``)
and needs Java. On a laptop without it the tests skip with the reason; with ``CI=true``
they fail, since CI must run them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import IN_CI, free_port, reachable

DEFAULT_SDK_ROOT = Path("/usr/lib/google-cloud-sdk")
EMULATOR_BIN = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")
PROJECT = "phasegate-test"


def sdk_root() -> Path | None:
    """The Google Cloud SDK root: ``$CLOUDSDK_ROOT_DIR``, ``gcloud info``, or Debian's path."""
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        return Path(os.environ["CLOUDSDK_ROOT_DIR"])
    gcloud = shutil.which("gcloud")
    if gcloud:
        try:
            result = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            result = None
        if result is not None and result.returncode == 0 and result.stdout.strip():
            return Path(result.stdout.strip())
    return DEFAULT_SDK_ROOT if DEFAULT_SDK_ROOT.exists() else None


def missing_reason() -> str | None:
    """Why the emulator cannot start here, or ``None`` when it can."""
    root = sdk_root()
    if root is None:
        return "the Google Cloud CLI is not installed (no SDK root)"
    if not (root / EMULATOR_BIN).exists():
        return f"the Pub/Sub emulator is not in {root / EMULATOR_BIN}"
    if shutil.which("java") is None:
        return "the Pub/Sub emulator needs java on PATH"
    return None


def require_emulator() -> Path:
    """The emulator launcher; skip on a laptop without it, fail under ``CI=true``."""
    reason = missing_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{reason}, and CI=true requires the Pub/Sub emulator tests to run")
        pytest.skip(f"{reason}; install it to run the Pub/Sub tests")
    root = sdk_root()
    assert root is not None
    return root / EMULATOR_BIN


class PubSubEmulator:
    """One emulator process in its own process group, stopped with everything it spawned."""

    def __init__(self, launcher: Path) -> None:
        self.launcher = launcher
        self.port = free_port()
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix="pubsub-emulator-", suffix=".log", delete=False
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the value of ``PUBSUB_EMULATOR_HOST``."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        """Start the emulator and wait until it accepts connections."""
        self._process = subprocess.Popen(
            [str(self.launcher), "--host=127.0.0.1", f"--port={self.port}"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        waiter = threading.Event()
        for _ in range(int(timeout / 0.1)):
            if self._process.poll() is not None:
                break
            if reachable("127.0.0.1", self.port):
                return
            waiter.wait(0.1)  # waiting for a real process to come up, not faking time
        self.stop()
        log = Path(self._log.name).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the Pub/Sub emulator did not start on {self.host}:\n{log}")

    def stop(self) -> None:
        """Stop the emulator (its launcher script and its Java process)."""
        process = self._process
        if process is None:
            return
        self._process = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(15)
        self._log.close()

    def create_topic(self, name: str | None = None) -> str:
        """Create a topic; returns its short name."""
        from google.cloud import pubsub_v1

        name = name or f"topic-{uuid.uuid4().hex[:10]}"
        with _env(self.host):
            publisher = pubsub_v1.PublisherClient()
            publisher.create_topic(request={"name": publisher.topic_path(PROJECT, name)})
            publisher.stop()
        return name

    def create_subscription(self, topic: str, name: str | None = None, **options: Any) -> str:
        """Create a pull subscription on ``topic``; returns its short name."""
        from google.cloud import pubsub_v1

        name = name or f"sub-{uuid.uuid4().hex[:10]}"
        with _env(self.host):
            subscriber = pubsub_v1.SubscriberClient()
            with subscriber:
                subscriber.create_subscription(
                    request={
                        "name": subscriber.subscription_path(PROJECT, name),
                        "topic": f"projects/{PROJECT}/topics/{topic}",
                        "ack_deadline_seconds": 60,
                        **options,
                    }
                )
        return name

    def publish(self, topic: str, data: bytes, **attributes: str) -> str:
        """Publish one message and wait for its id."""
        from google.cloud import pubsub_v1

        with _env(self.host):
            publisher = pubsub_v1.PublisherClient()
            try:
                return str(
                    publisher.publish(
                        publisher.topic_path(PROJECT, topic), data, **attributes
                    ).result(timeout=30)
                )
            finally:
                publisher.stop()

    def pull(self, subscription: str, max_messages: int = 100) -> list[Any]:
        """Pull (and acknowledge) what is waiting on ``subscription``."""
        from google.api_core import exceptions
        from google.cloud import pubsub_v1

        with _env(self.host):
            subscriber = pubsub_v1.SubscriberClient()
            with subscriber:
                path = subscriber.subscription_path(PROJECT, subscription)
                try:
                    response = subscriber.pull(
                        request={"subscription": path, "max_messages": max_messages}, timeout=5
                    )
                except exceptions.DeadlineExceeded:
                    return []
                received = list(response.received_messages)
                if received:
                    subscriber.acknowledge(
                        request={"subscription": path, "ack_ids": [m.ack_id for m in received]}
                    )
                return [m.message for m in received]


@contextlib.contextmanager
def _env(host: str) -> Iterator[None]:
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous


_SHARED: list[PubSubEmulator] = []
_SHARED_LOCK = threading.Lock()


def shared_emulator() -> PubSubEmulator:
    """One private emulator for the whole test session (started on first use, stopped
    when the interpreter exits); tests keep apart by using their own topics."""
    with _SHARED_LOCK:
        if not _SHARED:
            emulator = PubSubEmulator(require_emulator())
            emulator.start()
            atexit.register(emulator.stop)
            _SHARED.append(emulator)
        return _SHARED[0]


@contextlib.contextmanager
def running_emulator() -> Iterator[PubSubEmulator]:
    """A started private emulator, stopped on exit (skips or fails when it is missing)."""
    emulator = PubSubEmulator(require_emulator())
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
