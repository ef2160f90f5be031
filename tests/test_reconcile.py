"""Reconciliation: differences found per kind, repaired idempotently, double claims alerted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from phasegate.cli import main
from phasegate.events import EventKind, Severity
from phasegate.model import Completion, Status, Trigger, TriggerReason, trigger_id_for
from phasegate.reconcile import reconcile
from phasegate.service import create_app
from phasegate.stores.sql import SqlStore
from support import Harness

RUN = "2026-01-28"


def completion(processor: str, status: Status, harness: Harness, minutes: int = 0) -> Completion:
    return Completion(
        "extract", RUN, processor, status, harness.clock.now() + timedelta(minutes=minutes)
    )


def test_agreeing_stores_are_clean(harness: Harness) -> None:
    """Everything written through the tracker is in both stores: nothing to report."""
    harness.complete("extract", "api")
    harness.complete("extract", "files")
    harness.runtime.dispatcher.run_once()
    report = reconcile(harness.tracker.primary, harness.tracker.backup)
    assert report.clean
    assert report.differences == ()


def test_differences_are_found_and_repaired_idempotently(harness: Harness) -> None:
    """One-sided records and a failed/success split are listed, then repaired; success wins."""
    primary, backup = harness.tracker.primary, harness.tracker.backup
    primary.record_completion(completion("api", Status.FAILED, harness))
    backup.record_completion(completion("api", Status.SUCCESS, harness, 1))
    backup.record_completion(completion("files", Status.SUCCESS, harness))
    report = reconcile(primary, backup)
    kinds = {(d.kind, d.key[-1], d.missing_in) for d in report.differences}
    assert ("completion", "api", None) in kinds
    assert ("completion", "files", "primary") in kinds
    assert report.counts()["completion"] == 2
    assert not report.clean
    repaired = reconcile(primary, backup, repair=True)
    assert repaired.repaired
    assert repaired.remaining == ()
    assert repaired.clean
    assert [(c.processor, c.status) for c in primary.completions(RUN)] == [
        ("api", Status.SUCCESS),
        ("files", Status.SUCCESS),
    ]
    assert primary.completions(RUN) == backup.completions(RUN)
    assert reconcile(primary, backup).clean


def test_a_delivery_seen_by_one_store_is_copied(harness: Harness) -> None:
    """A trigger delivered in the primary but pending in the backup becomes delivered in both."""
    harness.complete("extract", "api")
    result = harness.complete("extract", "files")
    harness.tracker.primary.mark_delivered(result.trigger_id, harness.clock.now())
    report = reconcile(harness.tracker.primary, harness.tracker.backup, repair=True)
    assert [(d.kind, d.missing_in) for d in report.differences] == [("trigger", None)]
    assert harness.tracker.backup.triggers(RUN)[0].delivered


def test_a_claim_made_on_each_store_is_a_double_claim_and_alerted(harness: Harness) -> None:
    """Claims made apart (during an outage, by two replicas) are reported and raise a critical event."""

    def claim(at_minutes: int) -> Trigger:
        return Trigger(
            trigger_id=trigger_id_for("orders", "extract", RUN),
            pipeline="orders",
            phase="extract",
            next_phase="transform",
            run_key=RUN,
            reason=TriggerReason.COMPLETE,
            triggered_at=harness.clock.now() + timedelta(minutes=at_minutes),
        )

    harness.tracker.primary.claim_trigger(claim(0))
    harness.tracker.backup.claim_trigger(claim(3))
    report = reconcile(
        harness.tracker.primary, harness.tracker.backup, events=harness.runtime.events
    )
    assert [d.key for d in report.double_claims] == [("extract", RUN)]
    [event] = harness.events_of(EventKind.DOUBLE_CLAIM)
    assert event.severity is Severity.CRITICAL
    assert not report.clean


def test_the_reconciler_exports_its_divergence(harness: Harness) -> None:
    """After a pass the divergence per kind is a Prometheus gauge, and the stores agree."""
    harness.tracker.backup.record_completion(completion("api", Status.SUCCESS, harness))
    harness.runtime.reconciler.run_once()
    text = TestClient(create_app(harness.runtime)).get("/metrics").text
    assert 'phasegate_reconciliation_divergence{kind="completion"} 1.0' in text
    assert harness.tracker.primary.completions(RUN) == harness.tracker.backup.completions(RUN)


def test_the_reconcile_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 1 with differences, 0 once repaired; JSON lists them."""
    config = tmp_path / "p.toml"
    config.write_text(
        f'[pipeline]\nname = "o"\n[stores]\nprimary = "sqlite:///{tmp_path}/p.db"\nbackup = "sqlite:///{tmp_path}/b.db"\n'
        '[[phases]]\nname = "a"\nprocessors = ["x", "y"]\n'
    )
    assert (
        main(
            [
                "complete",
                "--config",
                str(config),
                "--phase",
                "a",
                "--run-key",
                RUN,
                "--processor",
                "x",
            ]
        )
        == 0
    )
    backup = SqlStore(f"sqlite:///{tmp_path}/b.db", pipeline="o")
    backup.record_completion(
        Completion("a", RUN, "y", Status.SUCCESS, datetime(2026, 1, 28, tzinfo=UTC))
    )
    backup.close()
    capsys.readouterr()
    assert main(["reconcile", "--config", str(config), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["completion"] == 1
    assert data["differences"][0]["missing_in"] == "primary"
    assert main(["reconcile", "--config", str(config), "--repair"]) == 0
    assert "repaired; 0 remain" in capsys.readouterr().out
    assert main(["reconcile", "--config", str(config)]) == 0
