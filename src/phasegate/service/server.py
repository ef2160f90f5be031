"""``phasegate serve``: uvicorn plus the background loops, shut down gracefully."""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence

import uvicorn

from phasegate.config import Pipeline
from phasegate.errors import ConfigError, PhasegateError
from phasegate.runtime import Runtime, open_runtime
from phasegate.service.app import create_app

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BackgroundLoops:
    """The dispatcher, the timeout checker (with its sweep) and the reconciler, each on its
    own thread between :meth:`start` and :meth:`stop`; each pass is also callable alone."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        dispatch_interval: float = 1.0,
        timeout_interval: float = 60.0,
        reconcile_interval: float = 600.0,
    ) -> None:
        self.runtime = runtime
        self.dispatch_interval = dispatch_interval
        self.timeout_interval = timeout_interval
        self.reconcile_interval = reconcile_interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the three loops, and the runtime's own background parts (the replicator
        that catches a recovered store up, without which claims deferred during an outage
        would wait for the next sweep of their run)."""
        if self._threads:
            return
        self.runtime.start()
        self._stop.clear()
        self._threads = [
            threading.Thread(target=target, name=name, daemon=True)
            for target, name in (
                (self._dispatch, "phasegate-dispatcher"),
                (self._timeouts, "phasegate-timeouts"),
                (self._reconcile, "phasegate-reconciler"),
            )
        ]
        for thread in self._threads:
            thread.start()

    def _dispatch(self) -> None:
        self.runtime.dispatcher.run_forever(self._stop, self.dispatch_interval)

    def _timeouts(self) -> None:
        while not self._stop.wait(self.timeout_interval):
            self.run_timeouts_once()

    def _reconcile(self) -> None:
        while not self._stop.wait(self.reconcile_interval):
            self.run_reconcile_once()

    def run_timeouts_once(self) -> None:
        """One sweep and one timeout pass; errors are logged, never fatal."""
        try:
            self.runtime.maintain(self.runtime.timeouts.runs, deliver=False)
        except PhasegateError:
            log.exception("timeout pass failed; next in %.0fs", self.timeout_interval)

    def run_reconcile_once(self) -> None:
        """One reconciliation pass; errors are logged, never fatal."""
        try:
            self.runtime.reconciler.run_once()
        except Exception:  # noqa: BLE001 - the reconciler logged and alerted it
            log.info("reconciliation pass failed; next in %.0fs", self.reconcile_interval)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current passes, then stop."""
        self._stop.set()
        self.runtime.dispatcher.wake()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []


class _Server(uvicorn.Server):
    """uvicorn, minus re-raising the signal after shutdown: phasegate still has to stop
    its loops and drain its alerts, then exit 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGINT/SIGTERM as a graceful exit, then restore the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(
    pipeline: Pipeline, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 1
) -> int:
    """Run the service until SIGTERM/SIGINT; returns the exit code.

    With ``workers`` > 1 the stores must be PostgreSQL or MariaDB/MySQL (see
    :mod:`phasegate.service.workers`); each worker is a process serving the same socket.
    """
    if pipeline.server.token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without a token: set [server] token "
            '(e.g. token = "env:PHASEGATE_TOKEN") or listen on 127.0.0.1'
        )
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    unguarded = unused_token_variable(pipeline, os.environ)
    if unguarded is not None:
        log.warning("%s", unguarded)
    if workers > 1:
        from phasegate.service.workers import serve_workers  # noqa: PLC0415

        return serve_workers(pipeline, host=host, port=port, workers=workers)
    return serve_one(pipeline, host=host, port=port)


def unused_token_variable(pipeline: Pipeline, environ: Mapping[str, str]) -> str | None:
    """What to warn when ``PHASEGATE_TOKEN`` is set but no ``[server] token`` reads it:
    whoever exported it expects the API to ask for it, and it does not."""
    if pipeline.server.token is not None or not environ.get("PHASEGATE_TOKEN"):
        return None
    return (
        "PHASEGATE_TOKEN is set, but [server] token is not: the API takes requests "
        'without a token; add token = "env:PHASEGATE_TOKEN" under [server] to require it'
    )


GC_THRESHOLDS = (10_000, 10, 10)
"""The collector's thresholds in a serving process (Python's default is 700, 10, 10)."""


def settle_garbage_collector() -> None:
    """Tune the cyclic collector for serving, once the app is built.

    What startup allocated (modules, the app, the stores' metadata) lives as long as the
    process: :func:`gc.freeze` moves it out of every later collection. Each request
    allocates and frees a few hundred short-lived objects, so the youngest generation
    is collected every 10,000 net allocations instead of every 700 (which had collected
    it several times per request). Reference counting frees almost all of it anyway;
    only cycles wait a little longer. In the HTTP benchmark: 18-23 % more single
    requests per second."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve_one(
    pipeline: Pipeline,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    sockets: Sequence[socket.socket] | None = None,
    worker: bool = False,
) -> int:
    """One process serving ``pipeline``: the app, its loops, then a graceful stop.

    ``sockets`` are listening sockets a supervisor shares between its workers; a
    ``worker`` names its pid in an ``X-Phasegate-Worker`` header on every answer and
    keeps its library counters mirrored into the shared metrics.
    """
    runtime = open_runtime(pipeline)
    app = create_app(runtime)
    loops = BackgroundLoops(
        runtime,
        timeout_interval=pipeline.server.timeout_check_interval.total_seconds(),
        reconcile_interval=pipeline.server.reconcile_interval.total_seconds(),
    )
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=30,
            headers=[("X-Phasegate-Worker", str(os.getpid()))] if worker else None,
        )
    )
    mirror = app.state.metrics.start_mirroring() if worker else None
    settle_garbage_collector()
    loops.start()
    log.info(
        "phasegate %s serving on http://%s:%d (pid %d)", pipeline.name, host, port, os.getpid()
    )
    try:
        server.run(sockets=list(sockets) if sockets else None)
    finally:
        loops.stop()
        if mirror is not None:
            mirror()
        app.state.health.stop()
        runtime.close()
        log.info("phasegate stopped")
    return 0
