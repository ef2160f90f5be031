"""Shared helpers of the benchmarks: medians, servers, a keep-alive HTTP load generator."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def median_of(fn: Callable[[], float], runs: int = 3) -> tuple[float, list[float]]:
    """Run ``fn`` (which returns a figure) ``runs`` times; the median and every sample."""
    samples = [fn() for _ in range(runs)]
    return statistics.median(samples), samples


def median_seconds(fn: Callable[[], object], runs: int = 5) -> float:
    """The median wall time of ``runs`` calls of ``fn``."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100), nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


class Server:
    """A server subprocess (uvicorn, one worker), stopped with SIGTERM."""

    def __init__(
        self, args: list[str], port: int, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=self._log, env={**os.environ, **(env or {})}, cwd=ROOT
        )
        wait_http(self.url + "/livez" if "serve" in args else self.url + "/")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def raise_open_files() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    except (ImportError, ValueError, OSError):
        pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return status, body


def request_bytes(method: str, path: str, body: bytes = b"", port: int = 0) -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def load(
    port: int, make_request: Callable[[int], bytes], clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` keep-alive connections sending requests back to back for ``seconds``."""
    counter = iter(range(10**12))
    done = 0
    errors = 0
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                writer.write(make_request(next(counter)))
                status, _ = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                if status >= 400:
                    errors += 1
                done += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.monotonic() - started
    return {
        "requests": done,
        "errors": errors,
        "rps": done / elapsed,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


class BusyCores:
    """How many of the machine's cores were busy (any process) between ``start`` and
    ``stop``, from ``/proc/stat``; ``None`` where there is no ``/proc/stat``."""

    def __init__(self) -> None:
        self._start: tuple[int, int] | None = None
        self.cores: float | None = None

    @staticmethod
    def _ticks() -> tuple[int, int] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        values = [int(value) for value in fields]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    def start(self) -> None:
        self._start = self._ticks()

    def stop(self) -> float | None:
        end = self._ticks()
        if self._start is None or end is None or end[0] == self._start[0]:
            return None
        total, idle = end[0] - self._start[0], end[1] - self._start[1]
        self.cores = (os.cpu_count() or 1) * (1 - idle / total)
        return self.cores


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    from importlib.metadata import version

    libs = {}
    for name in (
        "phasegate",
        "sqlalchemy",
        "fastapi",
        "uvicorn",
        "starlette",
        "psycopg",
        "celery",
        "redis",
        "tenacity",
    ):
        try:
            libs[name] = version(name)
        except Exception:
            continue
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "libraries": libs,
    }
