"""Backfills: one start signal per run key, never twice, resumable, rate-limited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from phasegate.backfill import (
    Backfill,
    BackfillItem,
    Outcome,
    days_between,
    parse_rate,
    read_run_keys,
)
from phasegate.cli import main
from phasegate.errors import ValidationError
from phasegate.model import TriggerReason, start_signal_id_for
from phasegate.testing import FakeClock
from rigs import MemoryRig

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]


@pytest.fixture
def rig(clock: FakeClock) -> Iterator[MemoryRig]:
    """The orders pipeline (extract → transform → load) on in-memory stores."""
    harness = MemoryRig(clock)
    yield harness
    harness.close()


def backfill(rig: MemoryRig, keys: list[str], **kwargs: object) -> Backfill:
    def deliver(trigger: object) -> None:
        rig.runtime.dispatcher.run_once()

    return Backfill(rig.orchestrator, "extract", keys, deliver=deliver, **kwargs)  # type: ignore[arg-type]


def test_a_backfill_starts_the_phase_once_for_every_run_key(rig: MemoryRig) -> None:
    """Five days: five start signals (reason backfill, ready [extract]) under the start ids."""
    report = backfill(rig, DAYS).run()
    assert report.count(Outcome.EMITTED) == 5
    assert report.complete
    sent = rig.transport.delivered
    assert [m.run_key for m in sent] == DAYS
    assert {(m.reason, m.ready_phases, m.attempt) for m in sent} == {
        (TriggerReason.BACKFILL, ("extract",), 1)
    }
    assert [m.trigger_id for m in sent] == [
        start_signal_id_for("orders", "extract", day, 1) for day in DAYS
    ]
    status = rig.orchestrator.phase_status("extract", DAYS[0])
    assert status.started_at is not None
    assert status.start_signal is not None


def test_running_the_same_backfill_again_emits_nothing_new(rig: MemoryRig) -> None:
    """The claims are the progress: the second run finds every signal already sent."""
    backfill(rig, DAYS).run()
    again = backfill(rig, DAYS).run()
    assert again.count(Outcome.EMITTED) == 0
    assert again.count(Outcome.ALREADY_EMITTED) == 5
    assert len(rig.transport.delivered) == 5


def test_an_interrupted_backfill_resumes_where_it_stopped(rig: MemoryRig) -> None:
    """Stopped after two keys (Ctrl-C), run again: the other three are sent, none twice."""
    seen: list[BackfillItem] = []

    def interrupt_after_two(item: BackfillItem) -> None:
        seen.append(item)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backfill(rig, DAYS, progress=interrupt_after_two).run()
    assert len(rig.transport.delivered) == 2
    resumed = backfill(rig, DAYS).run()
    assert [item.outcome for item in resumed.items] == [Outcome.ALREADY_EMITTED] * 2 + [
        Outcome.EMITTED
    ] * 3
    assert sorted(m.run_key for m in rig.transport.delivered) == DAYS


def test_a_run_already_under_way_is_not_started_again(rig: MemoryRig) -> None:
    """A day whose extract already has a report is skipped; the others are started."""
    rig.complete("extract", "api", run_key=DAYS[1])
    report = backfill(rig, DAYS[:3]).run()
    assert [item.outcome for item in report.items] == [
        Outcome.EMITTED,
        Outcome.ALREADY_STARTED,
        Outcome.EMITTED,
    ]


def test_the_rate_spaces_the_signals_sent_and_not_the_keys_skipped(
    rig: MemoryRig, clock: FakeClock
) -> None:
    """At 2/s, four new signals wait 0.5 s between them; already-sent keys wait for nothing."""
    backfill(rig, DAYS[:2]).run()
    clock.sleeps.clear()
    report = backfill(rig, [*DAYS, "2026-01-06"], rate=2.0).run()
    assert report.count(Outcome.EMITTED) == 4
    assert clock.sleeps == [0.5, 0.5, 0.5]


def test_days_keys_files_and_rates_are_read_or_refused_by_name(tmp_path: Path) -> None:
    """Day ranges include both ends; a keys file skips blanks and comments; rates take units."""
    assert days_between("2026-01-30", "2026-02-02") == [
        "2026-01-30",
        "2026-01-31",
        "2026-02-01",
        "2026-02-02",
    ]
    with pytest.raises(ValidationError, match="is before"):
        days_between("2026-02-02", "2026-01-30")
    with pytest.raises(ValidationError, match="must be dates"):
        days_between("batch-1", "batch-9")
    keys = tmp_path / "keys.txt"
    keys.write_text("# reprocess\nbatch-7\n\nbatch-9\nbatch-7\n")
    assert read_run_keys(keys) == ["batch-7", "batch-9"]
    assert (parse_rate("5/s"), parse_rate("30/m"), parse_rate("2")) == (5.0, 0.5, 2.0)
    with pytest.raises(ValidationError, match=r"expected e\.g\. 5/s"):
        parse_rate("fast")


CONFIG = """
[pipeline]
name = "orders"

[stores]
primary = "sqlite:///{dir}/primary.db"
backup = "sqlite:///{dir}/backup.db"

[triggers]
transport = "log:{dir}/triggers.jsonl"

[[phases]]
name = "extract"
processors = ["api"]
next = "load"

[[phases]]
name = "load"
processors = ["warehouse"]
"""


def test_the_backfill_command_sends_each_day_once_and_reports_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``phasegate backfill`` twice: three signals delivered, then none; JSON counts each."""
    config = tmp_path / "phasegate.toml"
    config.write_text(CONFIG.format(dir=tmp_path))
    command = ["backfill", "--config", str(config), "--phase", "extract"]
    command += ["--from", "2026-01-01", "--to", "2026-01-03", "--format", "json"]
    assert main(command) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["run_keys"], first["emitted"], first["already_emitted"]) == (3, 3, 0)
    assert main(command) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["emitted"], second["already_emitted"]) == (0, 3)
    lines = (tmp_path / "triggers.jsonl").read_text().splitlines()
    assert [json.loads(line)["reason"] for line in lines] == ["backfill"] * 3
    assert main([*command[:5], "--format", "text"]) == 1
    assert "give --from DATE and --to DATE, or --keys FILE" in capsys.readouterr().err
