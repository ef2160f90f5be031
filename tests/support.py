"""Helpers the tests share: which servers are reachable, and backend parametrization."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import pytest

from phasegate.config import StoresConfig, loads_pipeline
from phasegate.errors import TransientDeliveryError
from phasegate.events import Event, EventBus, EventKind
from phasegate.model import Trigger
from phasegate.runtime import open_runtime
from phasegate.stores.memory import MemoryStore
from phasegate.stores.sql import SqlStore
from phasegate.testing import FakeClock, FaultSwitch

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_HOST, PG_PORT = "127.0.0.1", int(os.environ.get("PHASEGATE_TEST_PG_PORT", "5432"))
MYSQL_HOST, MYSQL_PORT = "127.0.0.1", int(os.environ.get("PHASEGATE_TEST_MYSQL_PORT", "3306"))
PG_ADMIN_URL = os.environ.get(
    "PHASEGATE_TEST_PG_URL", f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"
)
MYSQL_ADMIN_URL = os.environ.get(
    "PHASEGATE_TEST_MYSQL_URL", f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/test"
)
BACKENDS = ("sqlite", "postgres", "mysql")


def reachable(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def unavailable(message: str) -> NoReturn:
    """Something a test needs is missing: skip on a laptop, fail under ``CI=true``
    (where ``.ci/run`` has installed or started everything)."""
    if IN_CI:
        pytest.fail(f"{message}, and CI=true requires it (.ci/run provides it)")
    pytest.skip(message)


def require_server(name: str, host: str, port: int) -> None:
    """Skip when the server is not running on a laptop; fail in CI, where it must be."""
    if not reachable(host, port):
        unavailable(f"{name} is not reachable on {host}:{port}; start it to run these tests")


CHROMIUM = os.environ.get("PHASEGATE_CHROMIUM", "/usr/bin/chromium")


def require_chromium() -> None:
    """The headless browser the page tests drive."""
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")


def backends(*names: str) -> pytest.MarkDecorator:
    """Parametrize the ``store_url`` fixture over backends (default: all)."""
    chosen = names or BACKENDS
    params = [
        pytest.param(name, marks=[getattr(pytest.mark, name)] if name != "sqlite" else [], id=name)
        for name in chosen
    ]
    return pytest.mark.parametrize("store_url", params, indirect=True)


class RecordedRequest:
    """One request the :class:`RecordingServer` received."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class RecordingServer:
    """A loopback HTTP server that records requests and answers from a script.

    ``responses`` is consumed one per request: ``(status, headers, body)``, a
    ``threading.Event`` to wait on before answering 200 (to hold a request in flight),
    or ``"close"`` to hang up without an answer; when it runs out, ``default`` answers.
    """

    def __init__(self, default: tuple[int, dict[str, str], bytes] = (200, {}, b"ok")) -> None:
        self.requests: list[RecordedRequest] = []
        self.responses: list[Any] = []
        self.default = default
        self.received = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # headers and body are two writes

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.requests.append(
                    RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
                )
                owner.received.set()
                answer = owner.responses.pop(0) if owner.responses else owner.default
                if answer == "close":  # hang up without answering
                    self.close_connection = True
                    return
                if isinstance(answer, threading.Event):
                    answer.wait(30)
                    answer = (200, {}, b"ok")
                status, headers, payload = answer
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    return

            do_POST = do_GET = do_HEAD = do_PUT = do_PATCH = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


PIPELINE_TEXT = """
[pipeline]
name = "orders"

[[phases]]
name = "extract"
processors = ["api", "files"]
next = "transform"
timeout = "1h"

[[phases]]
name = "transform"
processors = ["clean", "join"]
next = "load"
timeout = "30m"
on_timeout = "trigger"

[[phases]]
name = "load"
processors = ["warehouse"]
"""


class RecordingTransport:
    """An in-memory transport that records deliveries and can be made to fail."""

    def __init__(self) -> None:
        self.delivered: list[Trigger] = []
        self.failing = False
        self.attempts = 0

    def deliver(self, trigger: Trigger) -> None:
        self.attempts += 1
        if self.failing:
            raise TransientDeliveryError("receiver down")
        self.delivered.append(trigger)

    def ping(self) -> None:
        if self.failing:
            raise TransientDeliveryError("receiver down")

    def describe(self) -> str:
        return "memory:"

    def close(self) -> None:
        return


def hold_writer(store: SqlStore) -> threading.Event:
    """Keep ``store``'s writer busy in a transaction of its own until the returned event
    is set: what is queued behind it waits."""
    held, release = threading.Event(), threading.Event()

    def hold(_connection: Any) -> None:
        held.set()
        release.wait(10)

    store.writer.submit_work(hold)
    assert held.wait(5), "the writer did not take the hold"
    return release


class Harness:
    """A runtime on two fresh SQLite stores with a fake clock and faults on demand."""

    def __init__(
        self,
        tmp_path: Path,
        clock: FakeClock,
        text: str = PIPELINE_TEXT,
        synchronous: str = "FULL",
        backend: str = "sqlite",
    ) -> None:
        pipeline = loads_pipeline(text)
        options = f"?synchronous={synchronous}"
        pipeline = dataclasses.replace(
            pipeline,
            stores=StoresConfig(
                primary=f"sqlite:///{tmp_path}/primary.db{options}",
                backup=f"sqlite:///{tmp_path}/backup.db{options}",
            ),
        )
        self.clock = clock
        self.transport = RecordingTransport()
        self.events: list[Event] = []
        bus = EventBus()
        bus.subscribe(self.events.append)
        self.primary_fault = FaultSwitch(clock)
        self.backup_fault = FaultSwitch(clock)
        stores = None
        if backend == "memory":
            # Any store fails the generic way: every call raises a transient error.
            stores = (
                self.primary_fault.wrap(MemoryStore(pipeline=pipeline.name, name="primary")),
                self.backup_fault.wrap(MemoryStore(pipeline=pipeline.name, name="backup")),
            )
        self.runtime = open_runtime(
            pipeline,
            clock=clock,
            transport=self.transport,
            events=bus,
            rng=random.Random(3),
            stores=stores,
        )
        self.orchestrator = self.runtime.orchestrator
        self.tracker = self.runtime.tracker
        if backend == "sqlite":
            primary, backup = self.tracker.primary, self.tracker.backup
            assert isinstance(primary, SqlStore)
            assert isinstance(backup, SqlStore)
            # SQL stores fail at the driver level, as a lost connection would.
            self.primary_fault.attach(primary)
            self.backup_fault.attach(backup)

    def complete(
        self, phase: str, processor: str, run_key: str = "2026-01-28", **kwargs: Any
    ) -> Any:
        return self.orchestrator.handle_completion(phase, run_key, processor, **kwargs)

    def events_of(self, kind: EventKind) -> list[Event]:
        return [e for e in self.events if e.kind is kind]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UvicornThread:
    """Runs an ASGI app under a real uvicorn server on a loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off")
        )
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornThread:
        self._thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            threading.Event().wait(0.025)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(10)
