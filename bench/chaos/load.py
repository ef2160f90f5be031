"""The reporting client: every completion sent several times, reordered, to random replicas.

It behaves like a fleet of processors: a report that is not acknowledged (a 503, a
refused or dropped connection) is sent again, to another replica, after a short backoff.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from chaos.replicas import PHASES


@dataclass(frozen=True, slots=True, order=True)
class Report:
    """One processor's completion: its identity in phasegate."""

    phase: str
    run_key: str
    processor: str


def run_key(index: int) -> str:
    """The run key of run ``index``."""
    return f"run-{index:06d}"


def plan_reports(
    completions: int, copies: int, rng: random.Random, window: int = 40
) -> tuple[list[Report], list[Report]]:
    """The distinct completions (at least ``completions``) and the order they are sent in.

    Each completion is sent ``copies`` times; every send lands at a random place within
    ``window`` run keys of its own, so duplicates and phases arrive out of order while
    runs still progress from the first to the last, as days would.
    """
    per_run = sum(len(processors) for _, processors in PHASES)
    runs = math.ceil(completions / per_run)
    distinct = [
        Report(phase, run_key(index), processor)
        for index in range(runs)
        for phase, processors in PHASES
        for processor in processors
    ]
    keyed = [
        (index // per_run + rng.uniform(0, window), report)
        for index, report in enumerate(distinct)
        for _ in range(copies)
    ]
    keyed.sort(key=lambda pair: pair[0])
    return distinct, [report for _, report in keyed]


@dataclass(slots=True)
class LoadStats:
    """What the client saw."""

    total: int
    sent: int = 0
    acknowledged: set[Report] = field(default_factory=set)
    acks: int = 0
    retries: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    rejected: list[str] = field(default_factory=list)
    seconds: float = 0.0
    gave_up: int = 0

    @property
    def progress(self) -> float:
        """Share of the planned sends done (acknowledged or rejected)."""
        return self.sent / self.total if self.total else 1.0


async def drive(
    sends: Sequence[Report],
    urls: Sequence[str],
    token: str,
    stats: LoadStats,
    *,
    seed: int,
    concurrency: int = 32,
    batch: int = 0,
    deadline: float,
) -> None:
    """Send every report until acknowledged (or ``deadline``, a monotonic time, passes).

    With ``batch`` > 0, reports go ``batch`` at a time to ``POST /v1/completions:batch``
    (a batch may hold the same report twice); else one by one to ``POST /v1/completions``.
    """
    started = time.monotonic()
    queue = iter(sends)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(30.0, connect=5.0)

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(seed * 1000 + index)
        while chunk := list(itertools.islice(queue, max(batch, 1))):
            await send_until_acknowledged(client, rng, chunk)
            stats.sent += len(chunk)

    def acknowledge(chunk: list[Report], response: httpx.Response) -> None:
        if not batch:
            stats.acknowledged.add(chunk[0])
            stats.acks += 1
            return
        for item in response.json()["results"]:
            if item["ok"]:
                stats.acknowledged.add(chunk[item["index"]])
                stats.acks += 1
            else:
                stats.rejected.append(f"{chunk[item['index']]}: {item['error']}")

    async def send_until_acknowledged(
        client: httpx.AsyncClient, rng: random.Random, chunk: list[Report]
    ) -> None:
        bodies = [{"phase": r.phase, "run_key": r.run_key, "processor": r.processor} for r in chunk]
        path, body = (
            ("/v1/completions:batch", {"completions": bodies})
            if batch
            else ("/v1/completions", bodies[0])
        )
        for attempt in range(10_000):
            if time.monotonic() > deadline:
                stats.gave_up += len(chunk)
                return
            if attempt:
                stats.retries += 1
                await asyncio.sleep(min(1.0, 0.05 * 2 ** min(attempt, 5)) * rng.uniform(0.5, 1))
            url = rng.choice(urls)
            try:
                response = await client.post(f"{url}{path}", json=body, headers=headers)
            except httpx.TransportError as exc:
                stats.failures[type(exc).__name__] += 1
                continue
            if response.status_code in {200, 202}:
                acknowledge(chunk, response)
                return
            if response.status_code >= 500:
                stats.failures[f"HTTP {response.status_code}"] += 1
                continue
            stats.rejected.append(f"{chunk[0]}…: HTTP {response.status_code} {response.text[:200]}")
            return

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        await asyncio.gather(*(worker(i, client) for i in range(concurrency)))
    stats.seconds = time.monotonic() - started
