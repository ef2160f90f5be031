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

import pytest

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


def triggers(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as connection:
        return sorted(
            connection.execute(
                "SELECT t.run_key, t.phase FROM triggers t JOIN executions e "
                "ON e.trigger_id = t.trigger_id"
            ).fetchall()
        )


def test_a_claiming_write_claims_each_completed_phase_run_once_in_both_files(
    tmp_path: Path,
) -> None:
    """The ceiling of a path that claims: the call that completes a phase-run returns
    once its claim (trigger and execution record) is in both files; across concurrent
    callers and repeated reports each complete phase-run is claimed once, none other."""
    writes = DualWrite(tmp_path, claims_at=len(PROCESSORS))
    for processor in PROCESSORS[:-1]:
        writes.record_many([("a", "r0", processor)])
        assert triggers(tmp_path / "primary.db") == []
    writes.record_many([("a", "r0", PROCESSORS[-1])])
    for name in ("primary.db", "backup.db"):
        assert triggers(tmp_path / name) == [("r0", "a")]
    jobs = [[("a", f"r{1 + i // 5}", PROCESSORS[i % 5])] for i in range(35)]
    jobs += [[("a", "r0", "p0"), ("a", "r8", "p0")], [("b", "r1", "p1")]]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writes.record_many, jobs))
    writes.close()
    complete = [(f"r{i}", "a") for i in range(8)]
    for name in ("primary.db", "backup.db"):
        assert triggers(tmp_path / name) == complete
    assert writes.claimed() == [(run_key, 2) for run_key, _ in complete]


def test_the_benchmark_checks_the_claims_of_the_thinnest_that_claims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench_ingest

    assert bench_ingest.thin_batch_rate(tmp_path, 400, 100, 4, claims=True) > 0
    monkeypatch.setattr(
        bench_ingest, "DualWrite", lambda directory, claims_at: DualWrite(directory)
    )
    with pytest.raises(AssertionError, match="thin: 0 phase-runs claimed, not 40"):
        bench_ingest.thin_batch_rate(tmp_path, 400, 100, 4, claims=True)
