"""Against Celery's chord ("run the callback when all N tasks have finished").

1,000 runs × 10 no-op processors: time until every chord callback has run (Celery,
local Redis as broker and result backend, not durable) versus until every trigger is
delivered (phasegate, durable on two stores, on PostgreSQL and on SQLite FULL). The
phasegate side reports through its fastest honest path: the batch API
(``Orchestrator.record_completions``, 100 reports per call, 16 producers), each call
returning only after its batch is committed in both stores. Skipped with a notice when
Redis is not running.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import PYTHON, ROOT

from phasegate.config import StoresConfig, loads_pipeline
from phasegate.runtime import open_runtime
from phasegate.transports.log import LogTransport

RUNS, PROCESSORS, BATCH = 1000, 10, 100
PIPELINE = (
    '[pipeline]\nname = "bench"\nrun_key_pattern = "^r[0-9]+$"\n'
    '[[phases]]\nname = "a"\nprocessors = ['
    + ", ".join(f'"p{i}"' for i in range(PROCESSORS))
    + "]\n"
)


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def celery_seconds() -> float:
    import celery_app
    import redis
    from celery import chord

    counter = redis.Redis(host="127.0.0.1", port=6379, db=13)
    counter.delete("phasegate-bench-callbacks")
    redis.Redis(db=14).flushdb()
    redis.Redis(db=15).flushdb()
    worker = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "--concurrency=2",
            "--pool=prefork",
            "-Q",
            "phasegate-bench",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT / "bench",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        celery_app.app.control.ping(timeout=5)
        time.sleep(2)  # let the worker subscribe
        started = time.perf_counter()
        for run in range(RUNS):
            chord(celery_app.noop.s(run, i) for i in range(PROCESSORS))(celery_app.callback.s(run))
        deadline = time.monotonic() + 600
        while int(counter.get("phasegate-bench-callbacks") or 0) < RUNS:
            if time.monotonic() > deadline:
                raise RuntimeError("celery did not finish in 10 minutes")
            time.sleep(0.02)
        return time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(30)


def phasegate_seconds(primary: str, backup: str, directory: Path) -> float:
    pipeline = dataclasses.replace(loads_pipeline(PIPELINE), stores=StoresConfig(primary, backup))
    delivered = threading.Event()
    count = 0
    lock = threading.Lock()

    def counted(triggers: int) -> None:
        nonlocal count
        with lock:
            count += triggers
            if count >= RUNS:
                delivered.set()

    class CountingTransport(LogTransport):
        def deliver(self, trigger: Any) -> None:
            super().deliver(trigger)
            counted(1)

        def deliver_many(self, triggers: Any) -> Any:
            outcomes = super().deliver_many(triggers)
            counted(sum(outcome is None for outcome in outcomes))
            return outcomes

    runtime = open_runtime(
        pipeline, transport=CountingTransport(directory / f"t-{uuid.uuid4().hex}.jsonl")
    )
    stop = threading.Event()
    dispatcher = threading.Thread(
        target=runtime.dispatcher.run_forever, args=(stop, 0.05), daemon=True
    )
    runtime.orchestrator.tracker.list_runs(1)  # open the schema before the clock starts
    runtime.tracker.primary.ping()
    dispatcher.start()
    reports = [
        {"phase": "a", "run_key": f"r{run}", "processor": f"p{i}"}
        for run in range(RUNS)
        for i in range(PROCESSORS)
    ]
    batches = [reports[i : i + BATCH] for i in range(0, len(reports), BATCH)]
    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(runtime.orchestrator.record_completions, batches))
    if not all(item.ok for items in answers for item in items):
        raise RuntimeError("a completion was refused")
    if not delivered.wait(600):
        raise RuntimeError("phasegate did not deliver every trigger")
    elapsed = time.perf_counter() - started
    stop.set()
    runtime.dispatcher.wake()
    dispatcher.join(10)
    runtime.close()
    return elapsed


def main() -> dict[str, Any]:
    if not reachable(6379):
        print("celery comparison skipped: Redis is not running on 127.0.0.1:6379")
        return {"skipped": "redis not running"}
    completions = RUNS * PROCESSORS
    celery = celery_seconds()
    results: dict[str, Any] = {
        "celery_seconds": celery,
        "celery_completions_per_s": completions / celery,
    }
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        sqlite = phasegate_seconds(
            f"sqlite:///{directory}/p.db", f"sqlite:///{directory}/b.db", directory
        )
        results["phasegate_sqlite_seconds"] = sqlite
        results["phasegate_sqlite_completions_per_s"] = completions / sqlite
        if reachable(5432):
            import sqlalchemy as sa

            schema = f"bench_{uuid.uuid4().hex[:8]}"
            url = "postgresql://postgres@127.0.0.1:5432/test"
            try:
                pg = phasegate_seconds(
                    f"{url}?schema={schema}_p", f"{url}?schema={schema}_b", directory
                )
                results["phasegate_postgres_seconds"] = pg
                results["phasegate_postgres_completions_per_s"] = completions / pg
            finally:
                engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
                with engine.begin() as connection:
                    for suffix in ("p", "b"):
                        connection.exec_driver_sql(
                            f'DROP SCHEMA IF EXISTS "{schema}_{suffix}" CASCADE'
                        )
                engine.dispose()
    for key in ("sqlite", "postgres"):
        rate = results.get(f"phasegate_{key}_completions_per_s")
        if rate:
            results[f"ratio_{key}"] = rate / results["celery_completions_per_s"]
    print(
        f"vs Celery chord ({RUNS} runs × {PROCESSORS}): Celery {results['celery_completions_per_s']:.0f}/s; "
        f"phasegate SQLite {results.get('phasegate_sqlite_completions_per_s', 0):.0f}/s "
        f"(ratio {results.get('ratio_sqlite', 0):.2f}), PostgreSQL {results.get('phasegate_postgres_completions_per_s', 0):.0f}/s "
        f"(ratio {results.get('ratio_postgres', 0):.2f}); target ≥ 5 SQLite, ≥ 3 PostgreSQL"
    )
    results["path"] = f"record_completions, {BATCH} per call, 16 producers"
    results["target_ratio_sqlite"] = 5.0
    results["target_ratio_postgres"] = 3.0
    return results


if __name__ == "__main__":
    main()
