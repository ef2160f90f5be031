"""Reconciliation: differences found per kind, repaired idempotently, double claims alerted."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from phasegate.cli import main
from phasegate.errors import PhasegateError
from phasegate.events import Event, EventKind, Severity
from phasegate.model import Completion, Status, Trigger, TriggerReason, trigger_id_for
from phasegate.reconcile import reconcile
from phasegate.service import create_app
from phasegate.stores.sql import SqlStore
from phasegate.testing import FakeClock
from support import Harness, RecordingServer

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


# -- alerts: every reconciliation outcome reaches a local Slack webhook ------------------------

ALERTING_PIPELINE = """
[pipeline]
name = "orders"

[alerts.slack]
webhook_url = "{url}/services/T0/B0/RECONCILESECRET"
min_severity = "warning"

[[phases]]
name = "extract"
processors = ["api", "files"]
next = "transform"

[[phases]]
name = "transform"
processors = ["clean"]
"""


@pytest.fixture
def alerted(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[Harness, RecordingServer]]:
    """A runtime whose alerts go to a local Slack webhook."""
    with RecordingServer() as server:
        rig = Harness(tmp_path, clock, ALERTING_PIPELINE.format(url=server.url))
        yield rig, server
        rig.runtime.close()


def slack_messages(rig: Harness, server: RecordingServer) -> list[dict[str, Any]]:
    assert rig.runtime.alerter is not None
    assert rig.runtime.alerter.drain(10)
    return [request.json() for request in server.requests]


def logged(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


def test_divergence_found_is_a_warning_with_the_counts_per_kind(
    alerted: tuple[Harness, RecordingServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Records in one store only: a WARNING log line and an amber Slack alert with the counts."""
    rig, server = alerted
    rig.tracker.backup.record_completion(completion("api", Status.SUCCESS, rig))
    rig.tracker.backup.record_completion(completion("files", Status.SUCCESS, rig))
    report = reconcile(rig.tracker.primary, rig.tracker.backup, events=rig.runtime.events)
    assert report.counts()["completion"] == 2
    [line] = logged(caplog, logging.WARNING, "reconciliation found")
    assert "4 difference(s)" in line
    assert "(completion 2, history 2); not repaired (run with --repair)" in line
    [message] = slack_messages(rig, server)
    assert message["attachments"][0]["color"] == "#F2A900"
    assert "completion 2, history 2" in json.dumps(message)
    assert "RECONCILESECRET" not in json.dumps(message)


def test_divergence_left_after_repair_is_critical(
    alerted: tuple[Harness, RecordingServer],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backup that takes the repair but keeps nothing: CRITICAL log and a red alert naming what remains."""
    rig, server = alerted
    rig.tracker.primary.record_completion(completion("api", Status.SUCCESS, rig))
    monkeypatch.setattr(rig.tracker.backup, "import_records", lambda _records: None)
    report = reconcile(
        rig.tracker.primary, rig.tracker.backup, repair=True, events=rig.runtime.events
    )
    assert report.remaining_counts()["completion"] == 1
    assert not report.clean
    [line] = logged(caplog, logging.CRITICAL, "remain after repair")
    assert "2 difference(s) between the stores remain after repair" in line
    assert "(completion 1, history 1)" in line
    [message] = slack_messages(rig, server)
    assert message["attachments"][0]["color"] == "#D32F2F"
    assert "remain after repair" in message["text"]


def test_a_repaired_divergence_warns_once_and_a_clean_pass_resolves_the_critical(
    alerted: tuple[Harness, RecordingServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Critical while repair fails; once it works: a warning it was repaired, then resolved."""
    rig, server = alerted
    backup = rig.tracker.backup
    rig.tracker.primary.record_completion(completion("api", Status.SUCCESS, rig))
    real_import = backup.import_records
    monkeypatch.setattr(backup, "import_records", lambda _records: None)
    rig.runtime.reconciler.run_once()
    monkeypatch.setattr(backup, "import_records", real_import)
    rig.runtime.reconciler.run_once()
    # The dispatcher's lease trips the primary's breaker too; look at the reconciler's own.
    colours = [
        m["attachments"][0]["color"]
        for m in slack_messages(rig, server)
        if "reconciler" in m.get("text", "")
    ]
    assert colours == ["#D32F2F", "#F2A900", "#2EB67D"]
    assert rig.runtime.reconciler.run_once().clean
    assert len(server.requests) == 3


def test_a_reconciliation_that_fails_is_alerted_and_resolved_by_the_next_pass(
    alerted: tuple[Harness, RecordingServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Primary down during the service's pass: WARNING log + alert; the next good pass resolves it."""
    rig, server = alerted
    rig.complete("extract", "api")
    rig.primary_fault.fail()
    with pytest.raises(PhasegateError):
        rig.runtime.reconciler.run_once()
    [line] = logged(caplog, logging.WARNING, "reconciliation of")
    assert "failed" in line
    rig.primary_fault.heal()
    assert rig.runtime.reconciler.run_once().clean
    failed, resolved = slack_messages(rig, server)
    assert failed["attachments"][0]["color"] == "#F2A900"
    assert "reconciliation of the 50 most recent runs failed: TransientStoreError" in failed["text"]
    assert resolved["attachments"][0]["color"] == "#2EB67D"


def test_a_double_claim_is_logged_critical_and_alerted(
    alerted: tuple[Harness, RecordingServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A trigger claimed apart on each store: CRITICAL log line and a red alert naming the phase."""
    rig, server = alerted
    for store, minutes in ((rig.tracker.primary, 0), (rig.tracker.backup, 3)):
        store.claim_trigger(
            Trigger(
                trigger_id=trigger_id_for("orders", "extract", RUN),
                pipeline="orders",
                phase="extract",
                next_phase="transform",
                run_key=RUN,
                reason=TriggerReason.COMPLETE,
                triggered_at=rig.clock.now() + timedelta(minutes=minutes),
            )
        )
    reconcile(rig.tracker.primary, rig.tracker.backup, events=rig.runtime.events)
    assert logged(caplog, logging.CRITICAL, "possible double trigger of extract")
    messages = slack_messages(rig, server)
    assert any(
        m["attachments"][0]["color"] == "#D32F2F" and "double trigger" in m["text"]
        for m in messages
    )


def test_the_reconcile_command_alerts_divergence_and_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`phasegate reconcile` sends its divergence warning, and a store it cannot read, to Slack."""
    with RecordingServer() as server:
        monkeypatch.setenv("RECONCILE_WEBHOOK", server.url + "/services/T/B/RECONCILESECRET")
        config = tmp_path / "p.toml"
        text = (
            '[pipeline]\nname = "o"\n[stores]\nprimary = "sqlite:///{primary}"\n'
            f'backup = "sqlite:///{tmp_path}/b.db"\n'
            '[alerts.slack]\nwebhook_url = "env:RECONCILE_WEBHOOK"\n'
            '[[phases]]\nname = "a"\nprocessors = ["x", "y"]\n'
        )
        config.write_text(text.format(primary=f"{tmp_path}/p.db"))
        backup = SqlStore(f"sqlite:///{tmp_path}/b.db", pipeline="o")
        backup.record_completion(
            Completion("a", RUN, "y", Status.SUCCESS, datetime(2026, 1, 28, tzinfo=UTC))
        )
        backup.close()
        assert main(["reconcile", "--config", str(config)]) == 1
        assert len(server.requests) == 1
        assert "reconciliation found 2 difference(s)" in server.requests[0].json()["text"]
        config.write_text(text.format(primary=tmp_path))  # a folder: the store cannot open
        assert main(["reconcile", "--config", str(config)]) == 3  # a store is unavailable
        assert len(server.requests) == 2
        assert (
            "reconciliation of the first run to the last run failed"
            in (server.requests[1].json()["text"])
        )
    err = capsys.readouterr().err
    assert "store unavailable: primary" in err
    assert "RECONCILESECRET" not in err


def test_the_service_reconcile_loop_alerts_each_failed_pass_and_keeps_going(
    alerted: tuple[Harness, RecordingServer],
) -> None:
    """BackgroundLoops' reconciler: a store down fails passes (alerted, loop alive); healed, it resolves."""
    from phasegate.service.server import BackgroundLoops

    rig, server = alerted
    seen: list[EventKind] = []
    failed_twice, reconciled = threading.Event(), threading.Event()

    def watch(event: Event) -> None:
        seen.append(event.kind)
        if seen.count(EventKind.RECONCILE_FAILED) >= 2:
            failed_twice.set()
        if event.kind is EventKind.RECONCILED and failed_twice.is_set():
            reconciled.set()

    rig.runtime.events.subscribe(watch)
    rig.primary_fault.fail()
    loops = BackgroundLoops(rig.runtime, timeout_interval=3600, reconcile_interval=0.01)
    loops.start()
    try:
        assert failed_twice.wait(30), seen
        rig.primary_fault.heal()
        assert reconciled.wait(30), seen
    finally:
        loops.stop()
    # The dispatcher's lease trips the primary's breaker too; look at the reconciler's own.
    colours = [
        m["attachments"][0]["color"]
        for m in slack_messages(rig, server)
        if "reconciler" in m.get("text", "")
    ]
    assert colours[:2] == ["#F2A900", "#2EB67D"]  # repeats folded; then resolved once
