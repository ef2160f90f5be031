"""The chaos run, small: three ``phasegate serve`` replicas on a private PostgreSQL primary
and the shared one as backup, every report sent twice and reordered, with one primary
restart, one SIGKILL and one receiver outage (``make chaos`` is the same code, large)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from support import PG_HOST, PG_PORT, require_server, unavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from chaos.cluster import PG_BIN
from chaos.faults import PRIMARY_OUTAGE, RECEIVER_OUTAGE, REPLICA_KILL, Fault
from chaos.run import Settings, run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(240)]

SMALL = Settings(
    completions=210,
    copies=2,
    primary_outages=1,
    kills=1,
    receiver_outages=1,
    concurrency=8,
    batch=10,
    seed=5,
    max_seconds=150,
    serial_faults=True,
    # one after the other, so that the kill never meets a dispatcher stuck on the receiver
    plan=(
        Fault(0.1, RECEIVER_OUTAGE, 4.0),
        Fault(0.35, REPLICA_KILL, 1.0, replica=1),
        Fault(0.6, PRIMARY_OUTAGE, 3.0),
    ),
)


@pytest.fixture(scope="module")
def chaos() -> dict[str, Any]:
    """One small chaos run, shared by the checks below."""
    require_server("PostgreSQL", PG_HOST, PG_PORT)
    if not (PG_BIN / "initdb").exists():
        unavailable(f"{PG_BIN}/initdb is missing: the chaos run starts a private PostgreSQL")
    return run_chaos(SMALL)


def test_chaos_run_injects_every_failure_class(chaos: dict[str, Any]) -> None:
    """The primary was stopped and restarted, a replica SIGKILLed, the receiver failed."""
    assert chaos["faults_by_kind"] == {
        "primary_outage": 1,
        "replica_sigkill": 1,
        "receiver_outage": 1,
    }


def test_chaos_run_loses_no_acknowledged_completion(chaos: dict[str, Any]) -> None:
    """Every report is acknowledged in the end, and each is in both stores after reconcile."""
    completions = chaos["completions"]
    assert completions["acknowledged"] == completions["distinct"] == 210
    assert completions["rejected"] == []
    assert chaos["lost"] == 0, chaos["lost_samples"]
    assert chaos["completions_missing_after_reconcile"] == {"primary": 0, "backup": 0}


def test_chaos_run_triggers_every_complete_phase_run(chaos: dict[str, Any]) -> None:
    """Every phase of every run reaches the receiver and is marked delivered in both stores."""
    runs = chaos["phase_runs"]
    assert runs["missed"] == 0, runs["missed_samples"]
    assert runs["triggered"] == runs["expected"] == 75
    assert runs["marked_delivered"] == {"primary": 75, "backup": 75}


def test_chaos_run_never_double_claims(chaos: dict[str, Any]) -> None:
    """Neither reconciliation nor the receiver sees a phase-run claimed twice."""
    assert chaos["double_claims"]["reconcile"] == 0
    assert chaos["double_claims"]["receiver"] == 0, chaos["double_claims"]["samples"]


def test_chaos_run_leaves_the_stores_equal_after_reconcile(chaos: dict[str, Any]) -> None:
    """``phasegate reconcile --repair`` leaves nothing, and a second pass finds nothing."""
    assert chaos["stores_equal_after_reconcile"]
    assert chaos["reconcile"]["remaining_after_repair"] == 0
    assert chaos["reconcile"]["differences_after"] == 0


def test_chaos_run_alerts_every_injected_failure_class(chaos: dict[str, Any]) -> None:
    """The primary outage and the failing receiver reach the Slack webhook as alerts."""
    classes = chaos["alerts"]["injected_classes"]
    assert set(classes) == {"primary_outage", "receiver_outage", "replica_sigkill"}
    assert classes["primary_outage"]["alerted"], chaos["alerts"]["by_kind"]
    assert classes["receiver_outage"]["delivery_rounds_failed"] > 0
    assert classes["receiver_outage"]["alerted"], chaos["alerts"]["by_kind"]
    assert classes["replica_sigkill"]["alerted"], chaos["alerts"]["by_kind"]


def test_chaos_run_redelivers_only_after_crashes_or_failed_deliveries(
    chaos: dict[str, Any],
) -> None:
    """Every redelivery follows a SIGKILLed replica or a failed delivery, under 5 %."""
    redeliveries = chaos["redeliveries"]
    assert redeliveries["by_cause"]["unexplained"] == 0, redeliveries["unexplained_samples"]
    assert redeliveries["share_of_triggers"] < 0.05


def test_chaos_run_passes_every_check(chaos: dict[str, Any]) -> None:
    """Every check of the run holds, the run settled before its deadline included."""
    assert [name for name, ok in chaos["checks"].items() if not ok] == []
