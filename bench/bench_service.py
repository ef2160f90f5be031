"""The service beyond single completions: batch ingest over HTTP, ``serve --workers 2`` on
PostgreSQL against one worker, and the resident memory after 100k completions.

Every figure is checked against the service's own count: the recorded completions in
``/metrics`` must equal what the load generator was acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from bench_celery import reachable
from bench_http import PROCESSORS, _body, start_phasegate, start_thin
from common import BusyCores, Server, load, median_of, request_bytes

BATCH = 100
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _batch_body(index: int) -> bytes:
    """100 reports: ten runs of ten processors, fresh run keys per request."""
    first = index * BATCH
    return json.dumps(
        {
            "completions": [
                {
                    "phase": "a",
                    "run_key": f"r{1 + (first + i) // 10}",
                    "processor": PROCESSORS[(first + i) % 10],
                }
                for i in range(BATCH)
            ]
        }
    ).encode()


def recorded(server: Server) -> int:
    """The completions the service says it recorded (summed over workers)."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return round(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("phasegate_completions_total{") and 'outcome="recorded"' in line
        )
    )


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def batch_load(server: Server, seconds: float, clients: int) -> dict[str, Any]:
    """``clients`` keep-alive connections posting 100-report batches for ``seconds``."""
    port = _port(server)
    result: dict[str, Any] = asyncio.run(
        load(
            port,
            lambda i: request_bytes("POST", "/v1/completions:batch", _batch_body(i), port),
            clients,
            seconds,
        )
    )
    if result["errors"]:
        raise RuntimeError(f"batch load: {result['errors']} error answers")
    return result


def batch_rate(directory: Path, seconds: float = 5.0, clients: int = 8) -> float:
    """Completions per second through ``POST /v1/completions:batch`` (100 per request)."""
    server = start_phasegate(directory / f"batch-{uuid.uuid4().hex[:8]}")
    try:
        result = batch_load(server, seconds, clients)
        if recorded(server) != result["requests"] * BATCH:
            raise RuntimeError("batch load: the service recorded fewer completions than sent")
        return float(result["rps"]) * BATCH
    finally:
        server.stop()


def thin_batch_rate(directory: Path, seconds: float = 5.0, clients: int = 8) -> float:
    """The same batch load on the bare endpoint plus the thinnest durable dual write."""
    server = start_thin(directory / f"thin-batch-{uuid.uuid4().hex[:8]}")
    try:
        return float(batch_load(server, seconds, clients)["rps"]) * BATCH
    finally:
        server.stop()


@contextmanager
def pg_schemas() -> Iterator[tuple[str, str]]:
    """Two throwaway PostgreSQL schemas, dropped afterwards."""
    import sqlalchemy as sa

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        yield f"{PG_URL}?schema={schema}_p", f"{PG_URL}?schema={schema}_b"
    finally:
        engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as connection:
            for suffix in ("p", "b"):
                connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}_{suffix}" CASCADE')
        engine.dispose()


def workers_rate(
    directory: Path, workers: int, seconds: float = 5.0, busy: list[float] | None = None
) -> float:
    """Single-completion requests per second on PostgreSQL stores with ``workers`` processes;
    the cores the whole machine kept busy meanwhile (server, PostgreSQL, this load
    generator) are appended to ``busy``."""
    with pg_schemas() as stores:
        server = start_phasegate(
            directory / f"w{workers}-{uuid.uuid4().hex[:8]}", stores=stores, workers=workers
        )
        try:
            port = _port(server)
            cores = BusyCores()
            cores.start()
            result = asyncio.run(
                load(
                    port,
                    lambda i: request_bytes("POST", "/v1/completions", _body(i), port),
                    64,
                    seconds,
                )
            )
            if cores.stop() is not None and busy is not None:
                busy.append(round(cores.cores or 0.0, 2))
            if result["errors"] or recorded(server) != result["requests"]:
                raise RuntimeError(f"workers load: {result['errors']} errors or lost completions")
            return float(result["rps"])
        finally:
            server.stop()


def resident_memory(directory: Path, completions: int = 100_000) -> dict[str, float]:
    """The service's resident set before and after ``completions`` (batches of 100)."""
    server = start_phasegate(directory / "memory")
    try:
        pid = server.process.pid
        before = _rss_mb(pid)

        async def send() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                for start in range(0, completions // BATCH, 8):
                    answers = await asyncio.gather(
                        *(
                            client.post(
                                "/v1/completions:batch",
                                content=_batch_body(index),
                                headers={"Content-Type": "application/json"},
                            )
                            for index in range(start, min(start + 8, completions // BATCH))
                        )
                    )
                    if any(a.status_code != 200 for a in answers):
                        raise RuntimeError("memory load: a batch was refused")

        asyncio.run(send())
        if recorded(server) != completions:
            raise RuntimeError("memory load: completions lost")
        return {"rss_mb_start": before, "rss_mb_after": _rss_mb(pid), "completions": completions}
    finally:
        server.stop()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        rate, samples = median_of(lambda: batch_rate(directory))
        thin, thin_samples = median_of(lambda: thin_batch_rate(directory))
        results["batch"] = {
            "completions_per_s": rate,
            "samples": samples,
            "target": 20_000,
            "thin_completions_per_s": thin,
            "thin_samples": thin_samples,
            "of_thin": rate / thin,
        }
        print(f"HTTP batch ingest (100 per request, SQLite FULL): {rate:.0f}/s (target ≥ 20,000)")
        print(
            f"  the bare endpoint plus the thinnest durable dual write: {thin:.0f}/s; "
            f"phasegate does {rate / thin:.0%} of it"
        )
        if reachable(5432):
            busy_one: list[float] = []
            busy_two: list[float] = []
            one, one_samples = median_of(lambda: workers_rate(directory, 1, busy=busy_one))
            two, two_samples = median_of(lambda: workers_rate(directory, 2, busy=busy_two))
            results["workers"] = {
                "one_rps": one,
                "two_rps": two,
                "ratio": two / one,
                "samples_one": one_samples,
                "samples_two": two_samples,
                "target_ratio": 1.5,
                "cores": os.cpu_count(),
                "busy_cores_one": busy_one,
                "busy_cores_two": busy_two,
            }
            print(
                f"serve --workers 2 on PostgreSQL: {two:.0f} req/s vs one worker {one:.0f} req/s: "
                f"ratio {two / one:.2f} (target ≥ 1.5)"
            )
            if busy_one:
                # One worker's load leaves this much of the machine for a second one.
                used = statistics.median(busy_one)
                results["workers"]["ceiling_ratio"] = (os.cpu_count() or 1) / used
                print(
                    f"  one worker's load kept {used:.2f} of {os.cpu_count()} cores busy "
                    f"(two workers: {statistics.median(busy_two or [0.0]):.2f}): at the same CPU "
                    f"per request this machine fits at most "
                    f"{results['workers']['ceiling_ratio']:.2f}x one worker"
                )
        else:
            results["workers"] = {"skipped": "PostgreSQL not running on 127.0.0.1:5432"}
        memory = resident_memory(directory)
        results["memory"] = {**memory, "target_mb": 200}
        print(
            f"service resident memory: {memory['rss_mb_start']:.0f} MB at start, "
            f"{memory['rss_mb_after']:.0f} MB after {memory['completions']:,} completions "
            "(target < 200 MB)"
        )
    return results


if __name__ == "__main__":
    main()
