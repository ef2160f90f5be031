"""The Celery side of the comparison: a chord of no-op tasks per run, and its callback."""

from __future__ import annotations

import os

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
app = Celery("bench", broker=f"{BROKER}/14", backend=f"{BROKER}/15")
app.conf.update(
    task_default_queue="phasegate-bench", worker_prefetch_multiplier=64, result_expires=600
)
_counter = redis.Redis.from_url(f"{BROKER}/13")


@app.task(name="bench.noop")
def noop(run: int, index: int) -> int:
    """A processor that does nothing."""
    return index


@app.task(name="bench.callback")
def callback(results: list[int], run: int) -> int:
    """The "next phase": counts how many runs have all their processors done."""
    _counter.incr("phasegate-bench-callbacks")
    return len(results)
