"""Timeouts: reported once, naming the missing; triggered when the policy says (guarantee 5)."""

from __future__ import annotations

import pytest

from phasegate.events import EventKind, Severity
from phasegate.model import PhaseState, TriggerReason
from phasegate.timeouts import check_timeouts
from support import Harness


@pytest.fixture(params=["sqlite", "memory"])
def harness_backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on SQLite and on the in-memory store."""
    return str(request.param)


RUN = "2026-01-28"


def test_a_late_phase_alerts_once_naming_the_missing_processors(harness: Harness) -> None:
    """Past its timeout a phase is reported once; the next pass does not report it again."""
    harness.complete("extract", "api")
    harness.clock.advance(59 * 60)
    assert check_timeouts(harness.orchestrator) == []
    harness.clock.advance(2 * 60)
    [finding] = check_timeouts(harness.orchestrator)
    assert finding.first_report
    assert finding.report.missing == ("files",)
    [event] = harness.events_of(EventKind.PHASE_TIMED_OUT)
    assert event.severity is Severity.WARNING
    assert "missing: files" in event.message
    assert "(limit 1h)" in event.message
    [again] = check_timeouts(harness.orchestrator)
    assert not again.first_report
    assert len(harness.events_of(EventKind.PHASE_TIMED_OUT)) == 1
    assert again.trigger is None  # on_timeout = "alert" does not trigger


def test_on_timeout_trigger_claims_a_timeout_trigger_with_the_missing(harness: Harness) -> None:
    """With on_timeout = "trigger" the phase goes on, reason timeout, missing listed, once."""
    harness.complete("extract", "api")
    harness.complete("extract", "files")
    harness.complete("transform", "clean")
    harness.clock.advance(31 * 60)
    [finding] = check_timeouts(harness.orchestrator)
    assert finding.trigger is not None
    assert finding.trigger.claimed
    assert finding.trigger.trigger.reason is TriggerReason.TIMEOUT
    assert finding.trigger.trigger.missing == ("join",)
    assert finding.trigger.trigger.next_phase == "load"
    assert check_timeouts(harness.orchestrator) == []
    states = [s.state for s in harness.orchestrator.run_status(RUN)]
    assert states == [PhaseState.TRIGGERED, PhaseState.TRIGGERED, PhaseState.WAITING]
    assert not harness.complete("transform", "join").claimed


def test_a_phase_without_a_timeout_never_times_out(harness: Harness) -> None:
    """The last phase has no timeout: it waits for ever; a phase not started has no clock."""
    harness.complete("load", "warehouse", status="failed")
    harness.clock.advance(86400 * 10)
    assert check_timeouts(harness.orchestrator) == []
    states = [s.state for s in harness.orchestrator.run_status(RUN)]
    assert states == [PhaseState.NOT_STARTED, PhaseState.NOT_STARTED, PhaseState.WAITING]


def test_the_service_loop_runs_the_sweep_and_the_timeout_pass(harness: Harness) -> None:
    """One maintenance pass of the service claims the timed-out phase and wakes the dispatcher."""
    from phasegate.service.server import BackgroundLoops

    harness.complete("extract", "api")
    harness.complete("extract", "files")
    harness.complete("transform", "clean")
    harness.clock.advance(31 * 60)
    BackgroundLoops(harness.runtime).run_timeouts_once()
    transform = harness.orchestrator.phase_status("transform", RUN)
    assert transform.trigger is not None
    assert transform.trigger.trigger.reason is TriggerReason.TIMEOUT
    assert harness.runtime.dispatcher._wake.is_set()
