"""The library batch benchmark measures the loads it names: with claims, every phase-run
its reports complete is claimed in both stores; without, the same reports claim nothing.

``make bench`` prints the share of the batch path's time the claims take from these two
rates; a load that claimed less (or more) than it says would misstate that share."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_ingest


def triggers(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM phasegate_triggers").fetchone()[0])


@pytest.mark.parametrize(("claims", "claimed"), [(True, 40), (False, 0)])
def test_the_batch_load_claims_what_it_says_in_both_stores(
    tmp_path: Path, claims: bool, claimed: int
) -> None:
    rate = bench_ingest.phasegate_batch_rate(
        tmp_path, completions=400, batch=100, producers=4, claims=claims
    )
    assert rate > 0
    (run_dir,) = tmp_path.glob("pgb-*")
    assert [triggers(run_dir / name) for name in ("primary.db", "backup.db")] == [claimed] * 2


def test_a_load_that_claims_other_than_it_says_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_ingest, "UNCLAIMED", bench_ingest.PIPELINE)
    with pytest.raises(AssertionError, match="primary: 40 triggers claimed, not 0"):
        bench_ingest.phasegate_batch_rate(
            tmp_path, completions=400, batch=100, producers=4, claims=False
        )
