"""``phasegate serve --workers N``: N worker processes on one port.

Only PostgreSQL and MariaDB/MySQL stores are served by several processes: claims are
atomic in the database, the outbox is shared and leased, so every worker runs the
whole service, background loops included (a trigger is delivered by whichever
dispatcher holds its lease; a timeout is claimed once by the database; a
reconciliation pass run twice copies nothing the second time). SQLite is refused:
WAL lets several processes write, but each would queue its own writer thread behind
one file lock, so a second worker adds lock waits, not throughput, and the
embedded databases are meant for one process.

Metrics add up across workers through prometheus_client's multiprocess mode, in a
private directory this supervisor creates before starting the workers and removes
after the last one stopped. SIGTERM or SIGINT reaches every worker; each drains its
requests, stops its loops and closes its runtime; the supervisor exits 0 when every
worker did.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from multiprocessing.process import BaseProcess
from types import FrameType

from phasegate.config import Pipeline
from phasegate.errors import ConfigError
from phasegate.logs import JsonFormatter, configure_logging

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SHARED_SCHEMES = {"postgresql", "postgres", "mysql", "mariadb"}


def check_shareable(pipeline: Pipeline) -> None:
    """Refuse several workers unless both stores are server databases."""
    for role, url in (("primary", pipeline.stores.primary), ("backup", pipeline.stores.backup)):
        scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme not in _SHARED_SCHEMES:
            raise ConfigError(
                f"--workers > 1 needs PostgreSQL or MariaDB/MySQL stores; the {role} store "
                f"is {scheme!r}: an embedded store is written by one process (run one "
                "worker, or move both stores to a database server)"
            )


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket (one of a ``reuse_port`` group, with SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def spreads_connections() -> bool:
    """Whether the kernel spreads new connections across a SO_REUSEPORT group (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_workers(host: str, port: int, workers: int) -> list[socket.socket]:
    """A listening socket per worker, all on one port.

    On Linux each worker gets a socket of its own in a SO_REUSEPORT group, and the
    kernel hands each new connection to one of them by its addresses' hash. Workers
    sharing one socket race to accept: the first awake takes a whole burst of
    connections, and a client's keep-alive connections (a load balancer's pool, the
    benchmark's 64) may all end up on one worker while the others idle. Elsewhere the
    workers share one socket.

    The port is first bound alone (no SO_REUSEPORT), so a port in use, even by another
    SO_REUSEPORT group such as a second ``phasegate serve``, is refused as it would be
    for one worker; port 0 picks a free port for the whole group.
    """
    probe = bind(host, port)
    if not spreads_connections():
        return [probe] * workers
    port = probe.getsockname()[1]
    probe.close()
    sockets: list[socket.socket] = []
    try:
        for _ in range(workers):
            sockets.append(bind(host, port, reuse_port=True))
        # Another group could have bound between the probe and this one (a second
        # `serve --workers` started at the same instant): a group that finds another
        # listening beside it gives the port up (in a tie both do; start one again).
        if _listening_beside(sockets):
            raise OSError(
                errno.EADDRINUSE,
                f"{os.strerror(errno.EADDRINUSE)} (another group of listeners took the "
                "port while this one bound it)",
            )
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _listening_beside(sockets: list[socket.socket]) -> bool:
    """Whether a TCP socket other than ``sockets`` listens on their port, at their address
    or where one of the two is the wildcard of its family (Linux's ``/proc/net`` tables;
    ``False`` where they cannot be read)."""
    mine = {str(os.fstat(sock.fileno()).st_ino) for sock in sockets}
    listening: list[tuple[str, str, str]] = []  # (table, "address:port", inode)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                rows = [line.split() for line in lines][1:]
        except OSError:
            continue
        listening += [(table, row[1], row[9]) for row in rows if len(row) > 9 and row[3] == _LISTEN]
    ours = {(table, local) for table, local, inode in listening if inode in mine}
    return any(
        _overlap(local, our_local)
        for table, local, inode in listening
        if inode not in mine
        for our_table, our_local in ours
        if table == our_table
    )


def _overlap(local: str, other: str) -> bool:
    """Whether two listening addresses (hexadecimal ``address:port``, as the tables write
    them) of one family take the same connections: one port, and one address or a
    wildcard (0.0.0.0, ::)."""
    address, _, port = local.rpartition(":")
    other_address, _, other_port = other.rpartition(":")
    return port == other_port and (
        address == other_address or not address.strip("0") or not other_address.strip("0")
    )


_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def _worker_main(
    pipeline: Pipeline, host: str, port: int, sock: socket.socket, logs: tuple[str, str]
) -> None:
    """One worker process: the service on the shared socket (runs in a spawned child)."""
    from phasegate.service.server import serve_one  # noqa: PLC0415 - after the env is set

    configure_logging(*logs)
    raise SystemExit(serve_one(pipeline, host=host, port=port, sockets=[sock], worker=True))


def _log_settings() -> tuple[str, str]:
    """The parent's log level and format, for its workers."""
    root = logging.getLogger()
    json_logs = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    return logging.getLevelName(root.getEffectiveLevel()), "json" if json_logs else "text"


class Supervisor:
    """Starts the workers, forwards the stop signal, waits, cleans the metrics directory."""

    def __init__(self, pipeline: Pipeline, *, host: str, port: int, workers: int) -> None:
        self.pipeline = pipeline
        self.host = host
        self.port = port
        self.workers = workers
        self.processes: list[BaseProcess] = []
        self._stop = threading.Event()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping %d workers", signum, len(self.processes))
        self._stop.set()

    def run(self) -> int:
        """Serve until a signal or a worker's death; 0 when every worker stopped cleanly."""
        check_shareable(self.pipeline)
        try:
            sockets = bind_workers(self.host, self.port, self.workers)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc} (is another "
                "server on that port? pick another with --port)"
            ) from exc
        directory = tempfile.mkdtemp(prefix="phasegate-metrics-")
        previous_env = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = directory
        handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            context = multiprocessing.get_context("spawn")
            for index in range(self.workers):
                process = context.Process(
                    target=_worker_main,
                    args=(self.pipeline, self.host, self.port, sockets[index], _log_settings()),
                    name=f"phasegate-worker-{index}",
                )
                process.start()
                self.processes.append(process)
            # Each worker holds its socket now: the supervisor's copies would keep a dead
            # worker's socket in the group, its share of new connections never accepted.
            for sock in set(sockets):
                sock.close()
            log.info(
                "phasegate %s: %d workers serving on http://%s:%d (metrics in %s)",
                self.pipeline.name,
                self.workers,
                self.host,
                self.port,
                directory,
            )
            return self._wait()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            for sock in set(sockets):
                sock.close()
            if previous_env is None:
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = previous_env
            shutil.rmtree(directory, ignore_errors=True)

    def _wait(self) -> int:
        while not self._stop.wait(0.2):
            dead = [p for p in self.processes if not p.is_alive()]
            if dead:
                log.error(
                    "worker %s exited with %s; stopping the others", dead[0].pid, dead[0].exitcode
                )
                break
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            process.join(60)
            if process.is_alive():
                log.error("worker %s did not stop in 60 s; killing it", process.pid)
                process.kill()
                process.join(5)
        from prometheus_client import multiprocess  # noqa: PLC0415 - the env is set by now

        for process in self.processes:
            if process.pid is not None:
                multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
        codes = [process.exitcode for process in self.processes]
        if self._stop.is_set() and all(self._stopped_cleanly(code) for code in codes):
            return 0
        log.error("workers exited with %s", codes)
        return 1

    def _stopped_cleanly(self, code: int | None) -> bool:
        """Exit 0, or ended by the SIGTERM forwarded before it was serving: a worker still
        starting (importing, opening its stores) has not installed its handlers, and
        has accepted nothing to drain."""
        return code == 0 or (self._stop.is_set() and code == -signal.SIGTERM)


def serve_workers(pipeline: Pipeline, *, host: str, port: int, workers: int) -> int:
    """Run ``workers`` service processes until SIGTERM/SIGINT; the exit code."""
    return Supervisor(pipeline, host=host, port=port, workers=workers).run()
