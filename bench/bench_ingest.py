"""Ingest through the library on embedded SQLite (both stores synchronous=FULL), 16
concurrent producers, against the raw limit of the same disk: single durable SQLite
transactions of one row each, measured in the same run."""

from __future__ import annotations

import dataclasses
import sqlite3
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import median_of
from thin import DualWrite

from phasegate.config import StoresConfig, loads_pipeline
from phasegate.runtime import open_runtime
from phasegate.transports.log import LogTransport

PROCESSORS = [f"p{i}" for i in range(10)]
PIPELINE = (
    '[pipeline]\nname = "bench"\nrun_key_pattern = "^r[0-9]+$"\n'
    '[[phases]]\nname = "a"\nprocessors = [' + ", ".join(f'"{p}"' for p in PROCESSORS) + "]\n"
)
# The same pipeline expecting one more processor, which never reports: the same reports
# complete no phase-run, so nothing is claimed (the split of the batch path's time).
UNCLAIMED = PIPELINE.replace('"p9"]', '"p9", "never"]')


def raw_single_row_rate(directory: Path, rows: int = 1000) -> float:
    """One-row durable transactions per second on this disk (WAL, synchronous=FULL)."""
    connection = sqlite3.connect(directory / f"raw-{time.monotonic_ns()}.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    started = time.perf_counter()
    for index in range(rows):
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t (v) VALUES (?)", (f"row {index}",))
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return rows / elapsed


def runtime_in(directory: Path, text: str = PIPELINE, extra: str = "") -> Any:
    pipeline = dataclasses.replace(
        loads_pipeline(text),
        stores=StoresConfig(
            f"sqlite:///{directory}/primary.db{extra}", f"sqlite:///{directory}/backup.db{extra}"
        ),
    )
    return open_runtime(pipeline, transport=LogTransport(directory / "triggers.jsonl"))


def timed_rate(
    record: Callable[[Any], object], calls: list[Any], per_call: int, producers: int
) -> float:
    """Completions per second of ``record`` over ``calls`` from ``producers`` threads."""
    started = time.perf_counter()
    with ThreadPoolExecutor(producers) as pool:
        answers = list(pool.map(record, calls))
    elapsed = time.perf_counter() - started
    assert all(answer is not None for answer in answers)
    return len(calls) * per_call / elapsed


def reports(completions: int) -> list[tuple[str, str, str]]:
    """``completions`` success reports of phase a: run keys r1, r2… of ten processors."""
    return [
        ("a", f"r{1 + i // len(PROCESSORS)}", PROCESSORS[i % len(PROCESSORS)])
        for i in range(completions)
    ]


def phasegate_rate(directory: Path, completions: int = 3000, producers: int = 16) -> float:
    """Completions per second through ``handle_completion`` from ``producers`` threads."""
    run_dir = directory / f"pg-{time.monotonic_ns()}"
    run_dir.mkdir()
    runtime = runtime_in(run_dir)
    orchestrator = runtime.orchestrator
    orchestrator.handle_completion("a", "r0", "p0")  # schema created outside the timing
    try:
        return timed_rate(
            lambda report: orchestrator.handle_completion(*report),
            reports(completions),
            1,
            producers,
        )
    finally:
        runtime.close()


def thin_rate(directory: Path, completions: int = 3000, producers: int = 16) -> float:
    """The same load through the thinnest durable dual write (see thin.py): the ceiling."""
    writes = DualWrite(directory / f"thin-{time.monotonic_ns()}")
    writes.record("a", "r0", "p0")
    try:
        return timed_rate(lambda report: writes.record(*report), reports(completions), 1, producers)
    finally:
        writes.close()


def thin_batch_rate(
    directory: Path,
    completions: int = 20000,
    batch: int = 100,
    producers: int = 16,
    *,
    claims: bool = False,
) -> float:
    """The batch load through the thinnest durable dual write: the batch ceiling; with
    ``claims``, the ceiling of a path that claims what it completes (the least a claim
    needs, see thin.py): checked afterwards to hold each completed phase-run's trigger
    and execution record in both files."""
    writes = DualWrite(
        directory / f"thinb-{time.monotonic_ns()}",
        claims_at=len(PROCESSORS) if claims else None,
    )
    writes.record("a", "r0", "p0")
    every = reports(completions)
    batches = [every[i : i + batch] for i in range(0, completions, batch)]
    try:
        rate = timed_rate(writes.record_many, batches, batch, producers)
    finally:
        writes.close()
    claimed = writes.claimed()
    expected = completions // len(PROCESSORS) if claims else 0
    assert len(claimed) == expected, f"thin: {len(claimed)} phase-runs claimed, not {expected}"
    assert all(stores == 2 for _, stores in claimed), "thin: a claim missing from a file"
    return rate


def phasegate_batch_rate(
    directory: Path,
    completions: int = 20000,
    batch: int = 100,
    producers: int = 16,
    *,
    claims: bool = True,
) -> float:
    """Completions per second through ``record_completions`` in ``batch``-item calls.

    Each call completes ten phase-runs, each claimed in the write; with ``claims=False``
    the pipeline expects one more processor, so the same reports complete nothing."""
    run_dir = directory / f"pgb-{time.monotonic_ns()}"
    run_dir.mkdir()
    runtime = runtime_in(run_dir, PIPELINE if claims else UNCLAIMED)
    orchestrator = runtime.orchestrator
    orchestrator.handle_completion("a", "r0", "p0")  # schema created outside the timing
    every = [
        {"phase": phase, "run_key": run_key, "processor": processor}
        for phase, run_key, processor in reports(completions)
    ]
    batches = [every[i : i + batch] for i in range(0, completions, batch)]

    def record(reports: list[dict[str, str]]) -> object:
        items = orchestrator.record_completions(reports)
        return items if all(item.ok for item in items) else None

    try:
        rate = timed_rate(record, batches, batch, producers)
    finally:
        runtime.close()
    expected = completions // len(PROCESSORS) if claims else 0
    for store in ("primary", "backup"):
        claimed = claimed_in(run_dir / f"{store}.db")
        assert claimed == expected, f"{store}: {claimed} triggers claimed, not {expected}"
    return rate


def claimed_in(path: Path) -> int:
    """How many triggers the SQLite store at ``path`` holds."""
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("SELECT count(*) FROM phasegate_triggers").fetchone()[0])
    finally:
        connection.close()


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        baseline, baseline_runs = median_of(lambda: raw_single_row_rate(directory))
        rate, runs = median_of(lambda: phasegate_rate(directory))
        thin, thin_runs = median_of(lambda: thin_rate(directory))
        batch_rate, batch_runs = median_of(lambda: phasegate_batch_rate(directory))
        unclaimed, unclaimed_runs = median_of(lambda: phasegate_batch_rate(directory, claims=False))
        thin_batch, thin_batch_runs = median_of(lambda: thin_batch_rate(directory))
        thin_claims, thin_claims_runs = median_of(lambda: thin_batch_rate(directory, claims=True))
    result = {
        "phasegate_completions_per_s": rate,
        "raw_single_row_txn_per_s": baseline,
        "ratio": rate / baseline,
        "target_ratio": 1.5,
        "thin_completions_per_s": thin,
        "thin_ratio": thin / baseline,
        "of_thin": rate / thin,
        "batch_completions_per_s": batch_rate,
        "batch_ratio": batch_rate / baseline,
        "batch_target_ratio": 5.0,
        "thin_batch_completions_per_s": thin_batch,
        "thin_batch_ratio": thin_batch / baseline,
        "batch_of_thin": batch_rate / thin_batch,
        "thin_batch_samples": thin_batch_runs,
        "thin_claims_batch_completions_per_s": thin_claims,
        "thin_claims_batch_ratio": thin_claims / baseline,
        "batch_of_thin_claims": batch_rate / thin_claims,
        "thin_claims_batch_samples": thin_claims_runs,
        "unclaimed_batch_completions_per_s": unclaimed,
        "unclaimed_batch_ratio": unclaimed / baseline,
        "unclaimed_batch_samples": unclaimed_runs,
        "claims_share_of_batch_time": 1 - batch_rate / unclaimed,
        "samples": runs,
        "batch_samples": batch_runs,
        "baseline_samples": baseline_runs,
        "thin_samples": thin_runs,
    }
    print(
        f"ingest (library, SQLite FULL, 16 producers): {rate:.0f}/s vs raw single-row durable "
        f"txns {baseline:.0f}/s: ratio {rate / baseline:.2f} (target ≥ 1.5)"
    )
    print(
        f"  the thinnest durable dual write (bench/thin.py), same load: {thin:.0f}/s: ratio "
        f"{thin / baseline:.2f}; phasegate does {rate / thin:.0%} of it"
    )
    print(
        f"batch ingest (library, 100 per call, 16 producers): {batch_rate:.0f}/s: ratio "
        f"{batch_rate / baseline:.2f} (target ≥ 5)"
    )
    print(
        f"  the thinnest durable dual write, same batches: {thin_batch:.0f}/s: ratio "
        f"{thin_batch / baseline:.2f}; phasegate does {batch_rate / thin_batch:.0%} of it"
    )
    print(
        f"  the thinnest durable dual write claiming what it completes: {thin_claims:.0f}/s: "
        f"ratio {thin_claims / baseline:.2f}; phasegate does {batch_rate / thin_claims:.0%} of it"
    )
    print(
        f"  the same batches completing no phase-run (nothing claimed): {unclaimed:.0f}/s: "
        f"ratio {unclaimed / baseline:.2f}; the claims take {1 - batch_rate / unclaimed:.0%} "
        "of the batch path's time"
    )
    return result


if __name__ == "__main__":
    main()
