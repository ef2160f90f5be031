"""Micro benchmark of the SQL store's writer: completions per second through two SQLite
stores (``synchronous=FULL``, as primary and backup), each write submitted to both and
awaited on both futures, against raw one-row durable sqlite3 transactions measured in
the same run. Prints medians of three runs and their ratios.

    .venv/bin/python bench/bench_store_writer.py
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_ingest import raw_single_row_rate
from common import median_of

from phasegate.model import Completion, Status
from phasegate.stores.sql import SqlStore

T0 = datetime(2026, 1, 28, tzinfo=UTC)


def _completions(producer: int, count: int) -> list[Completion]:
    return [
        Completion("a", f"r{producer:02d}{i // 10:06d}", f"p{i % 10}", Status.SUCCESS, T0)
        for i in range(count)
    ]


def writer_rate(directory: Path, *, producers: int, batch: int, completions: int) -> float:
    """Completions per second, ``producers`` threads each recording ``batch`` per call."""
    stamp = time.monotonic_ns()
    stores = [
        SqlStore(f"sqlite:///{directory}/{role}-{stamp}.db", pipeline="bench", name=role)
        for role in ("primary", "backup")
    ]
    for store in stores:
        store.ensure_schema()
    per_producer = completions // producers

    def produce(producer: int) -> None:
        items = _completions(producer, per_producer)
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            futures = [store.submit_completions(chunk) for store in stores]
            for future in futures:
                future.result()

    started = time.perf_counter()
    with ThreadPoolExecutor(producers) as pool:
        list(pool.map(produce, range(producers)))
    elapsed = time.perf_counter() - started
    for store in stores:
        store.close()
    return per_producer * producers / elapsed


def main() -> dict[str, Any]:
    """Run the three measurements; print and return the figures."""
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        raw, _ = median_of(lambda: raw_single_row_rate(directory))
        single, _ = median_of(
            lambda: writer_rate(directory, producers=16, batch=1, completions=4000)
        )
        batched, _ = median_of(
            lambda: writer_rate(directory, producers=4, batch=100, completions=40000)
        )
    figures = {
        "raw_single_row_txn_per_s": round(raw),
        "writer_16_producers_per_s": round(single),
        "writer_batches_of_100_per_s": round(batched),
        "ratio_single": round(single / raw, 2),
        "ratio_batched": round(batched / raw, 2),
    }
    print(
        f"store writer, two SQLite FULL stores: 16 producers {single:,.0f}/s "
        f"({figures['ratio_single']}x), 100-item batches {batched:,.0f}/s "
        f"({figures['ratio_batched']}x) vs raw one-row durable transactions {raw:,.0f}/s"
    )
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
