"""Ingest with history: the rate with 1k, 10k and 100k runs already stored must not fall
(an index or a query that grows with history would show here). Five rounds, the sizes
taking turns within each; the median per size."""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_ingest import PROCESSORS, runtime_in


def populate(path: Path, runs: int) -> None:
    """``runs`` old runs, each with one completion, written straight into a store's tables."""
    connection = sqlite3.connect(path)
    stamp = datetime(2025, 1, 1, tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    rows = [
        ("bench", f"h{index:07d}", "a", "p0", 1, "success", None, "{}", stamp)
        for index in range(runs)
    ]
    with connection:
        connection.executemany(
            "INSERT INTO phasegate_completions (pipeline, run_key, phase, processor, attempt, status, correlation_id, metadata, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.executemany(
            "INSERT INTO phasegate_completion_history (pipeline, run_key, phase, processor, attempt, status, occurred_at, correlation_id, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r[0], r[1], r[2], r[3], r[4], r[5], r[8], r[6], r[7]) for r in rows],
        )
        connection.executemany(
            "INSERT INTO phasegate_runs (pipeline, run_key, first_seen_at) VALUES (?, ?, ?)",
            [(r[0], r[1], stamp) for r in rows],
        )
    connection.close()


def rate_with_history(directory: Path, runs: int, completions: int = 2000) -> float:
    runtime = runtime_in(directory)
    orchestrator = runtime.orchestrator
    orchestrator.handle_completion("a", "r0", "p0")
    runtime.close()
    for name in ("primary.db", "backup.db"):
        populate(directory / name, runs)
    runtime = runtime_in(directory)
    orchestrator = runtime.orchestrator
    jobs = [
        (f"r{1 + i // len(PROCESSORS)}", PROCESSORS[i % len(PROCESSORS)])
        for i in range(completions)
    ]
    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda job: orchestrator.handle_completion("a", job[0], job[1]), jobs))
    elapsed = time.perf_counter() - started
    runtime.close()
    return completions / elapsed


SIZES = (1_000, 10_000, 100_000)
ROUNDS = 5


def main() -> dict[str, Any]:
    # The sizes take turns, round after round, so a slow spell of this shared machine
    # falls on every size alike; each figure is the median of its rounds.
    samples: dict[int, list[float]] = {runs: [] for runs in SIZES}
    with tempfile.TemporaryDirectory() as name:
        for round_ in range(ROUNDS):
            for runs in SIZES:
                directory = Path(name) / f"{runs}-{round_}"
                directory.mkdir()
                samples[runs].append(rate_with_history(directory, runs, completions=3000))
    results: dict[str, Any] = {str(runs): statistics.median(samples[runs]) for runs in SIZES}
    results["samples"] = {str(runs): samples[runs] for runs in SIZES}
    base = results["1000"]
    results["ratio_100k_to_1k"] = results["100000"] / base
    print(
        "ingest with history: "
        + ", ".join(f"{runs:,} runs {results[str(runs)]:.0f}/s" for runs in SIZES)
        + f"; 100k/1k ratio {results['ratio_100k_to_1k']:.2f} (target: no fall)"
    )
    return results


if __name__ == "__main__":
    main()
