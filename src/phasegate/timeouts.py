"""Phases that miss their timeout: report each once, naming who is missing; trigger by policy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from phasegate.config import Phase, TimeoutPolicy, format_duration
from phasegate.events import Event, EventKind, Severity
from phasegate.model import PhaseState, TimeoutReport, TriggerReason
from phasegate.orchestrator import Orchestrator, TriggerResult
from phasegate.unexpected import alerts_unexpected

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TimeoutFinding:
    """A phase found past its timeout in this pass."""

    report: TimeoutReport
    first_report: bool
    trigger: TriggerResult | None


class TimeoutChecker:
    """Finds phases past their timeout; ``run_once`` is one pass over recent runs."""

    def __init__(self, orchestrator: Orchestrator, *, runs: int = 50) -> None:
        self.orchestrator = orchestrator
        self.runs = runs

    @alerts_unexpected("timeouts", events=lambda checker: checker.orchestrator.events)
    def run_once(self) -> list[TimeoutFinding]:
        """Check every phase with a timeout in the most recent runs."""
        orchestrator = self.orchestrator
        findings = []
        now = orchestrator.clock.now()
        for run_key in orchestrator.list_runs(self.runs):
            for status in orchestrator.run_status(run_key):
                if status.state is not PhaseState.TIMED_OUT or status.started_at is None:
                    continue
                phase = orchestrator.pipeline.phase(status.phase)
                report = TimeoutReport(
                    phase=status.phase,
                    run_key=run_key,
                    started_at=status.started_at,
                    reported_at=now,
                    missing=status.missing,
                    attempt=status.attempt,
                )
                outcome = orchestrator.tracker.record_timeout(report)
                if outcome.won:
                    self._alert(phase, report, status.optional_missing)
                trigger = None
                if phase.on_timeout is TimeoutPolicy.TRIGGER:
                    trigger = orchestrator.trigger(
                        phase.name, run_key, reason=TriggerReason.TIMEOUT
                    )
                findings.append(TimeoutFinding(report, outcome.won, trigger))
        return findings

    def _alert(
        self, phase: Phase, report: TimeoutReport, optional_missing: tuple[str, ...]
    ) -> None:
        waited = (report.reported_at - report.started_at).total_seconds()
        limit = format_duration(phase.timeout) if phase.timeout else "none"
        attempt = f" (attempt {report.attempt})" if report.attempt != 1 else ""
        then = (
            "; triggering the next phase anyway"
            if phase.on_timeout is TimeoutPolicy.TRIGGER
            else ""
        )
        optional = (
            f"; optional, not reported: {', '.join(optional_missing)}" if optional_missing else ""
        )
        self.orchestrator.events.emit(
            Event(
                EventKind.PHASE_TIMED_OUT,
                Severity.WARNING,
                f"{phase.name}_to_{'+'.join(phase.next_phases)}"
                if phase.next_phases
                else phase.name,
                f"{phase.name} for {report.run_key}{attempt} timed out after {waited:.0f}s "
                f"(limit {limit}); missing: {', '.join(report.missing)}"
                f"{optional}{then}",
                run_key=report.run_key,
                phase=phase.name,
                details={
                    "missing": list(report.missing),
                    "optional_missing": list(optional_missing),
                    "attempt": report.attempt,
                },
            )
        )


@dataclass(frozen=True, slots=True)
class MaintenancePass:
    """One sweep plus one timeout pass: what was claimed and what timed out."""

    swept: tuple[TriggerResult, ...]
    findings: tuple[TimeoutFinding, ...]

    @property
    def claimed(self) -> frozenset[str]:
        """Trigger ids claimed in this pass (by the sweep or by a timeout policy)."""
        ids = {r.trigger.trigger_id for r in self.swept if r.claimed}
        ids.update(
            f.trigger.trigger.trigger_id for f in self.findings if f.trigger and f.trigger.claimed
        )
        return frozenset(ids)

    @property
    def swept_ids(self) -> tuple[str, ...]:
        """Trigger ids the sweep claimed (complete phases that were left untriggered)."""
        return tuple(r.trigger.trigger_id for r in self.swept if r.claimed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as ``phasegate check-timeouts --format json`` prints it."""
        return {
            "timed_out": [
                {
                    "phase": f.report.phase,
                    "run_key": f.report.run_key,
                    "missing": list(f.report.missing),
                    "first_report": f.first_report,
                    "trigger_id": f.trigger.trigger.trigger_id if f.trigger else None,
                }
                for f in self.findings
            ],
            "swept": list(self.swept_ids),
        }

    def to_text(self) -> str:
        """Lines for the terminal: each phase past its timeout, each sweep claim."""
        lines = [
            f"timed out: {f.report.phase} for {f.report.run_key} "
            f"({'reported' if f.first_report else 'already reported'}); "
            f"missing: {', '.join(f.report.missing)}"
            for f in self.findings
        ]
        lines += [f"claimed a complete, untriggered phase: {tid}" for tid in self.swept_ids]
        if not self.findings:
            lines.append("no phase past its timeout")
        return "\n".join(lines)


@alerts_unexpected("timeouts")
def run_maintenance(
    orchestrator: Orchestrator, *, runs: int = 50, rolling_steps: int | None = 1
) -> MaintenancePass:
    """Claim complete phases left untriggered (over recent runs, then ``rolling_steps``
    steps of the rolling sweep over older ones, or a whole turn with ``None``), then
    check timeouts over recent runs."""
    swept = orchestrator.sweep(runs)
    steps = 0
    while rolling_steps is None or steps < rolling_steps:
        swept += orchestrator.sweep_rolling()
        steps += 1
        if orchestrator.rolling_turn_over:
            break
    findings = TimeoutChecker(orchestrator, runs=runs).run_once()
    return MaintenancePass(tuple(swept), tuple(findings))


@alerts_unexpected("timeouts")
def check_timeouts(orchestrator: Orchestrator, *, runs: int = 50) -> list[TimeoutFinding]:
    """One timeout pass over the ``runs`` most recent runs."""
    return TimeoutChecker(orchestrator, runs=runs).run_once()
