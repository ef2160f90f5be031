"""Completions per second through ``record_completions`` on the Google Cloud stores, against
their local emulators (Firestore: Google's; BigQuery: bqemulator), beside SQLite and
PostgreSQL (the shared server on 127.0.0.1:5432, a throwaway schema) measured in the same
run: batches of 100 and single completions, one caller. The last row is the full
dual-write path: a runtime with Firestore primary and BigQuery backup, reports through
``orchestrator.record_completions`` (validation, both writes, claims of completed phases).

Emulators are not the cloud: the figures compare per-call overheads on this machine, not
production throughput (Firestore's and BigQuery's own latencies are network-bound).

    .venv/bin/python bench/bench_gcp.py [--batches 5] [--singles 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import ROOT, median_of

from phasegate.model import Completion, Status

sys.path.insert(0, str(ROOT / "tests" / "gcp"))
from emulators import BigQueryEmulator, EmulatorMissing, FirestoreEmulator

T0 = datetime(2026, 1, 28, tzinfo=UTC)
__all__ = ["EmulatorMissing", "main"]
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def completions(count: int, run: str) -> list[Completion]:
    """``count`` distinct successes spread over phase-runs of ten processors each."""
    return [
        Completion(
            phase=f"phase{index // 10 % 5}",
            run_key=f"{run}-{index // 50}",
            processor=f"p{index % 10}",
            status=Status.SUCCESS,
            occurred_at=T0 + timedelta(seconds=index),
            metadata={"rows": index},
        )
        for index in range(count)
    ]


def record(store: Any, batch: Sequence[Completion]) -> None:
    """Record ``batch`` through the batch API (or one by one on a store without it)."""
    if hasattr(store, "record_completions"):
        store.record_completions(batch)
    else:  # the SQL store before its batch API lands
        for completion in batch:
            store.record_completion(completion)


DUAL_PIPELINE = """
[pipeline]
name = "bench"
run_key_pattern = "^[a-z0-9-]+$"

[stores]
primary = "firestore://bench-project?prefix={tag}"
backup = "bigquery://bench-project/{tag}"

[triggers]
transport = "log:{folder}/triggers-{tag}.jsonl"
""" + "".join(
    f"""
[[phases]]
name = "phase{n}"
processors = [{", ".join(f'"p{i}"' for i in range(10))}]
"""
    for n in range(5)
)


class DualWrite:
    """A runtime on Firestore (primary) and BigQuery (backup), recording report dicts."""

    def __init__(self, folder: Path) -> None:
        from phasegate.config import loads_pipeline
        from phasegate.runtime import open_runtime

        tag = f"d{uuid.uuid4().hex[:12]}"
        self.runtime = open_runtime(loads_pipeline(DUAL_PIPELINE.format(tag=tag, folder=folder)))

    def record_completions(self, batch: Sequence[Completion]) -> None:
        reports = [
            {
                "phase": c.phase,
                "run_key": c.run_key,
                "processor": c.processor,
                "metadata": {"rows": 1},
            }
            for c in batch
        ]
        items = self.runtime.orchestrator.record_completions(reports)
        assert all(item.ok for item in items), items

    def close(self) -> None:
        self.runtime.close()


def postgres_store(schemas: list[str]) -> Any:
    """A SQL store on the shared PostgreSQL server, in a schema of its own (dropped later)."""
    from phasegate.stores.sql import SqlStore

    schema = f"bench_gcp_{uuid.uuid4().hex[:8]}"
    schemas.append(schema)
    return SqlStore(f"{PG_URL}?schema={schema}", pipeline="bench", name="postgresql")


def drop_schemas(schemas: list[str]) -> None:
    """Drop the throwaway PostgreSQL schemas."""
    import sqlalchemy as sa

    if not schemas:
        return
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        for schema in schemas:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def postgres_reachable() -> bool:
    """Whether the shared PostgreSQL server answers on 127.0.0.1:5432."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def rate(store_for: Callable[[], Any], batch_size: int, batches: int) -> float:
    """Completions per second recording ``batches`` batches of ``batch_size`` on a fresh store."""
    store = store_for()
    try:
        record(store, completions(batch_size, "warm"))  # connections, tables, JIT
        work = completions(batch_size * batches, uuid.uuid4().hex[:8])
        started = time.perf_counter()
        for start in range(0, len(work), batch_size):
            record(store, work[start : start + batch_size])
        return len(work) / (time.perf_counter() - started)
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Measure every store and the dual-write path; print and return the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5, help="batches of 100 per sample")
    parser.add_argument("--singles", type=int, default=50, help="single completions per sample")
    parser.add_argument("--runs", type=int, default=3, help="samples per figure (median)")
    args = parser.parse_args(argv)

    from phasegate.stores.gcp_urls import open_gcp_store
    from phasegate.stores.sql import SqlStore

    folder = Path(tempfile.mkdtemp(prefix="bench-gcp-"))
    schemas: list[str] = []
    with FirestoreEmulator() as firestore, BigQueryEmulator() as bigquery:
        os.environ["FIRESTORE_EMULATOR_HOST"] = firestore.host
        os.environ["BIGQUERY_EMULATOR_HOST"] = bigquery.host
        stores: dict[str, Callable[[], Any]] = {
            "sqlite": lambda: SqlStore(
                f"sqlite:///{folder}/{uuid.uuid4().hex}.db", pipeline="bench", name="sqlite"
            ),
            "firestore (emulator)": lambda: open_gcp_store(
                f"firestore://bench-project?prefix=b{uuid.uuid4().hex[:12]}",
                pipeline="bench",
                name="firestore",
            ),
            "bigquery (emulator)": lambda: open_gcp_store(
                f"bigquery://bench-project/b{uuid.uuid4().hex[:12]}",
                pipeline="bench",
                name="bigquery",
            ),
            "dual-write fs+bq (runtime)": lambda: DualWrite(folder),
        }
        if postgres_reachable():
            stores = {
                "sqlite": stores.pop("sqlite"),
                "postgresql": lambda: postgres_store(schemas),
                **stores,
            }
        else:
            print("postgresql: skipped (no server on 127.0.0.1:5432)")
        results: dict[str, dict[str, float]] = {}
        for label, store_for in stores.items():
            batched, _ = median_of(lambda f=store_for: rate(f, 100, args.batches), args.runs)
            single, _ = median_of(lambda f=store_for: rate(f, 1, args.singles), args.runs)
            results[label] = {
                "batch_100_per_s": round(batched, 1),
                "single_per_s": round(single, 1),
            }
            print(f"{label:26} batches of 100: {batched:9.1f}/s   single: {single:8.1f}/s")
    drop_schemas(schemas)
    base = results["sqlite"]
    for label, figures in results.items():
        if label != "sqlite":
            print(
                f"{label:26} vs sqlite: batches x{figures['batch_100_per_s'] / base['batch_100_per_s']:.2f}, "
                f"single x{figures['single_per_s'] / base['single_per_s']:.2f}"
            )
    print(json.dumps({"bench_gcp": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
