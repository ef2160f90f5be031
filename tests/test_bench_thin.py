"""The benchmark's ceiling (bench/thin.py) does the durable work it claims to: a report
is answered only once it is committed in both files, with its phase-run's successes.

A thin writer that answered early, or wrote one file only, would make the ceiling that
``make bench`` prints beside phasegate's rates look higher than it is."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from thin import DualWrite

PROCESSORS = [f"p{i}" for i in range(5)]


def rows(path: Path, table: str) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as connection:
        return sorted(connection.execute(f"SELECT run_key, processor FROM {table}").fetchall())


def test_every_answered_report_is_in_both_files(tmp_path: Path) -> None:
    writes = DualWrite(tmp_path)
    jobs = [(f"r{i // 5}", PROCESSORS[i % 5]) for i in range(40)]
    answered: list[tuple[str, str]] = []

    def record(job: tuple[str, str]) -> None:
        writes.record("a", *job)
        # Read from another connection right after the answer: the row is committed.
        for name in ("primary.db", "backup.db"):
            assert job in rows(tmp_path / name, "completions")
        answered.append(job)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(record, jobs))
    writes.close()
    assert sorted(answered) == sorted(jobs)
    for name in ("primary.db", "backup.db"):
        assert rows(tmp_path / name, "completions") == sorted(jobs)
        assert rows(tmp_path / name, "history") == sorted(jobs)
        with sqlite3.connect(tmp_path / name) as connection:
            runs = connection.execute("SELECT run_key FROM runs ORDER BY run_key").fetchall()
        assert runs == [(f"r{i}",) for i in range(8)]


def test_the_answer_is_the_phase_runs_successes_in_both_stores(tmp_path: Path) -> None:
    writes = DualWrite(tmp_path)
    for processor in PROCESSORS[:-1]:
        assert processor in writes.record("a", "r1", processor)
    assert writes.record("a", "r1", PROCESSORS[-1]) == frozenset(PROCESSORS)
    assert writes.record("b", "r1", "p0") == frozenset({"p0"})
    writes.close()


def test_an_event_loop_caller_is_answered_after_both_commits(tmp_path: Path) -> None:
    writes = DualWrite(tmp_path)

    async def main() -> list[frozenset[str]]:
        return await asyncio.gather(*(writes.arecord("a", "r1", p) for p in PROCESSORS))

    answers = asyncio.run(main())
    writes.close()
    assert frozenset(PROCESSORS) in answers
    for name in ("primary.db", "backup.db"):
        assert rows(tmp_path / name, "completions") == [("r1", p) for p in PROCESSORS]


def test_a_batch_is_answered_per_phase_run_once_in_both_files(tmp_path: Path) -> None:
    writes = DualWrite(tmp_path)
    reports = [("a", f"r{i // 5}", PROCESSORS[i % 5]) for i in range(12)]
    answers = writes.record_many(reports)
    for name in ("primary.db", "backup.db"):
        assert rows(tmp_path / name, "completions") == sorted((r, p) for _, r, p in reports)
    writes.close()
    assert answers == {
        ("a", "r0"): frozenset(PROCESSORS),
        ("a", "r1"): frozenset(PROCESSORS),
        ("a", "r2"): frozenset(PROCESSORS[:2]),
    }
