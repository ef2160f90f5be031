"""The service over HTTP: ingest against a bare endpoint, trigger latency, a probe storm.

Servers run as separate processes (uvicorn, one worker); the load generator is an
asyncio client keeping 64 connections alive, in this process.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from common import (
    PYTHON,
    Server,
    free_port,
    load,
    median_of,
    percentile,
    raise_open_files,
    request_bytes,
)

PROCESSORS = [f"p{i}" for i in range(10)]
CONFIG = """
[pipeline]
name = "bench"
run_key_pattern = "^r[0-9]+$"

[stores]
primary = "{primary}"
backup = "{backup}"

[triggers]
transport = "{transport}"

[server]
health_cache = "30s"

[[phases]]
name = "a"
processors = [{processors}]
"""


def start_phasegate(
    directory: Path,
    transport: str = "log:/dev/null",
    processors: list[str] = PROCESSORS,
    stores: tuple[str, str] | None = None,
    workers: int = 1,
) -> Server:
    directory.mkdir(parents=True, exist_ok=True)
    primary, backup = stores or (
        f"sqlite:///{directory}/primary.db",
        f"sqlite:///{directory}/backup.db",
    )
    config = directory / "phasegate.toml"
    config.write_text(
        CONFIG.format(
            primary=primary,
            backup=backup,
            transport=transport,
            processors=", ".join(f'"{p}"' for p in processors),
        )
    )
    port = free_port()
    return Server(
        [
            PYTHON,
            "-m",
            "phasegate.cli",
            "--log-level",
            "WARNING",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        port,
        directory / "serve.log",
    )


def start_app(directory: Path, app: str, env: dict[str, str] | None = None) -> Server:
    """``bench/<app>.py`` under uvicorn with the settings phasegate's server uses."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return Server(
        [
            PYTHON,
            "-m",
            "uvicorn",
            "--app-dir",
            "bench",
            f"{app}:app",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        port,
        directory / f"{app}.log",
        env=env,
    )


def start_bare(directory: Path) -> Server:
    """The baseline: a bare endpoint answering 202 (bare_app.py)."""
    return start_app(directory, "bare_app")


def start_thin(directory: Path) -> Server:
    """The bare endpoint plus the thinnest durable dual write (thin_app.py): the ceiling."""
    return start_app(directory, "thin_app", env={"THIN_DIR": str(directory)})


def _body(index: int) -> bytes:
    return json.dumps(
        {"phase": "a", "run_key": f"r{1 + index // 10}", "processor": PROCESSORS[index % 10]}
    ).encode()


def measure_rps(server: Server, seconds: float = 5.0) -> float:
    port = int(server.url.rsplit(":", 1)[1])
    result = asyncio.run(
        load(port, lambda i: request_bytes("POST", "/v1/completions", _body(i), port), 64, seconds)
    )
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} error answers during the load")
    return float(result["rps"])


def ingest(directory: Path) -> dict[str, Any]:
    counter = iter(range(100))

    def once(start: Callable[[Path], Server], name: str) -> float:
        server = start(directory / f"{name}-{next(counter)}")
        try:
            return measure_rps(server)
        finally:
            server.stop()

    bare, bare_runs = median_of(lambda: once(start_bare, "bare"))
    served, runs = median_of(lambda: once(start_phasegate, "ingest"))
    thin, thin_runs = median_of(lambda: once(start_thin, "thin"))
    print(
        f"HTTP ingest: phasegate {served:.0f} req/s vs bare endpoint {bare:.0f} req/s: ratio {served / bare:.2f} (target ≥ 0.5)"
    )
    print(
        f"  the bare endpoint plus the thinnest durable dual write (bench/thin_app.py): "
        f"{thin:.0f} req/s: ratio {thin / bare:.2f}; phasegate does {served / thin:.0%} of it"
    )
    return {
        "thin_rps": thin,
        "thin_ratio": thin / bare,
        "of_thin": served / thin,
        "thin_samples": thin_runs,
        "phasegate_rps": served,
        "bare_rps": bare,
        "ratio": served / bare,
        "target_ratio": 0.5,
        "samples": runs,
        "baseline_samples": bare_runs,
    }


class _Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                owner.arrivals.setdefault(self.headers["Idempotency-Key"], time.monotonic())
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def trigger_latency(directory: Path, triggers: int = 300) -> dict[str, Any]:
    """From the 202 of the completing request to the trigger's arrival at the receiver."""
    receiver = _Receiver()
    server = start_phasegate(directory / "latency", transport=receiver.url, processors=["only"])
    acked: dict[str, float] = {}
    try:
        with httpx.Client(base_url=server.url) as client:
            for index in range(triggers):
                response = client.post(
                    "/v1/completions",
                    json={"phase": "a", "run_key": f"r{index}", "processor": "only"},
                )
                acked[response.json()["trigger_id"]] = time.monotonic()
        deadline = time.monotonic() + 30
        while len(receiver.arrivals) < triggers and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
        receiver.server.shutdown()
    latencies = [
        max(0.0, receiver.arrivals[t] - acked[t]) * 1000 for t in acked if t in receiver.arrivals
    ]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(
        f"trigger latency (ack → delivered, HTTP transport): p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(latencies)} triggers (target p99 ≤ 10 ms)"
    )
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "delivered": len(latencies),
        "sent": triggers,
        "target_p99_ms": 10.0,
    }


async def _storm(url: str, probes: int) -> list[float]:
    limits = httpx.Limits(max_connections=probes, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def probe() -> float:
            started = time.perf_counter()
            response = await client.get("/health")
            response.raise_for_status()
            return (time.perf_counter() - started) * 1000

        return await asyncio.gather(*(probe() for _ in range(probes)))


def health_storm(directory: Path, probes: int = 2000) -> dict[str, Any]:
    raise_open_files()
    results = []
    for attempt in range(3):
        server = start_phasegate(directory / f"storm-{attempt}")
        try:
            latencies = asyncio.run(_storm(server.url, probes))
            metrics = httpx.get(server.url + "/metrics").text
        finally:
            server.stop()
        checks = {
            line.split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("phasegate_health_checks_total{")
        }
        results.append((percentile(latencies, 99), checks))
    results.sort(key=lambda r: r[0])
    p99, checks = results[len(results) // 2]
    print(
        f"health storm: {probes} concurrent probes, p99 {p99:.0f} ms, dependency checks run: {checks} (target 1 each)"
    )
    return {
        "probes": probes,
        "p99_ms": p99,
        "checks": checks,
        "p99_samples": [r[0] for r in results],
    }


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        return {
            "http_ingest": ingest(directory),
            "trigger_latency": trigger_latency(directory),
            "health_storm": health_storm(directory),
        }


if __name__ == "__main__":
    main()
