"""The dashboard's page for one run, and the front page's phase-duration charts.

The run page shows a timeline (Gantt) of every processor's reports per phase and
attempt, each phase-run's duration, every trigger and start signal with its id and
delivery time, and the failed and late processors. Everything is drawn on the
server as inline SVG: the page loads nothing from outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import quote

from phasegate.config import Phase, Pipeline
from phasegate.model import Completion, OutboxEntry, PhaseExecution, Status
from phasegate.reruns import SUPERSEDED
from phasegate.service.dashboard_charts import Bar, BarKind, Mark, duration_chart_svg, timeline_svg
from phasegate.status import PhaseStatus

if TYPE_CHECKING:
    from phasegate.runtime import Runtime

CHART_RUNS = 30

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 8px}
.meta{color:#666;margin-bottom:12px}a{color:#1565c0}
table{border-collapse:collapse;background:#fff;margin-bottom:8px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}.mono{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.problem{color:#b3261e;font-weight:600}.late{color:#a15c00;font-weight:600}
.pending{color:#9a6b00}.legend span{margin-right:14px;font-size:12px}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
svg.timeline{background:#fff;border:1px solid #ddd}
.charts{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
svg.durations{background:#fff;border:1px solid #ddd;border-radius:4px}
"""


@dataclass(frozen=True, slots=True)
class RunRecords:
    """Everything the run page draws, read once."""

    run_key: str
    history: tuple[Completion, ...]
    triggers: tuple[OutboxEntry, ...]
    executions: tuple[PhaseExecution, ...]
    statuses: tuple[PhaseStatus, ...]
    now: datetime

    @property
    def empty(self) -> bool:
        """Nothing was ever recorded for this run."""
        return not self.history and not self.triggers


def read_run(runtime: Runtime, run_key: str) -> RunRecords:
    """Read what the run page needs from the stores (the run key is validated)."""
    orchestrator = runtime.orchestrator
    statuses = orchestrator.run_status(run_key)
    tracker = runtime.tracker
    return RunRecords(
        run_key=run_key,
        history=tuple(c for c in tracker.history(run_key) if c.processor != SUPERSEDED),
        triggers=tuple(tracker.triggers(run_key)),
        executions=tuple(tracker.phase_executions(run_key=run_key, limit=1000)),
        statuses=tuple(statuses),
        now=orchestrator.clock.now(),
    )


@dataclass(frozen=True, slots=True)
class _PhaseRun:
    phase: Phase
    attempt: int
    start: datetime
    end: datetime
    reports: tuple[Completion, ...]
    trigger: OutboxEntry | None
    start_signal: OutboxEntry | None
    current: bool

    @property
    def deadline(self) -> datetime | None:
        return self.start + self.phase.timeout if self.phase.timeout else None


def _phase_runs(pipeline: Pipeline, records: RunRecords) -> list[_PhaseRun]:
    runs = []
    current = {s.phase: s for s in records.statuses}
    for phase in pipeline.phases:
        status = current[phase.name]
        attempts = {c.attempt for c in records.history if c.phase == phase.name}
        attempts |= {e.trigger.attempt for e in records.triggers if e.trigger.phase == phase.name}
        if status.started_at is not None:
            attempts.add(status.attempt)
        for attempt in sorted(attempts):
            run = _phase_run(phase, attempt, records, status)
            if run is not None:
                runs.append(run)
    return runs


def _phase_run(
    phase: Phase, attempt: int, records: RunRecords, status: PhaseStatus
) -> _PhaseRun | None:
    reports = tuple(
        sorted(
            (c for c in records.history if c.phase == phase.name and c.attempt == attempt),
            key=lambda c: c.occurred_at,
        )
    )
    mine = [e for e in records.triggers if e.trigger.phase == phase.name]
    trigger = next(
        (e for e in mine if e.trigger.attempt == attempt and not e.trigger.is_start_signal), None
    )
    signal = next(
        (e for e in mine if e.trigger.attempt == attempt and e.trigger.is_start_signal), None
    )
    execution = next(
        (e for e in records.executions if e.phase == phase.name and e.attempt == attempt), None
    )
    is_current = attempt == status.attempt
    starts = [
        moment
        for moment in (
            execution.started_at if execution else None,
            status.started_at if is_current else None,
            signal.claimed_at if signal else None,
            reports[0].occurred_at if reports else None,
        )
        if moment is not None
    ]
    if not starts:
        return None
    start = min(starts)
    if execution is not None:
        end = execution.triggered_at
    elif trigger is not None:
        end = trigger.claimed_at
    elif is_current:
        end = records.now
    else:
        end = max([start, *(c.occurred_at for c in reports)])
    return _PhaseRun(phase, attempt, start, max(end, start), reports, trigger, signal, is_current)


def build_timeline(pipeline: Pipeline, records: RunRecords) -> tuple[list[Bar], list[Mark]]:
    """The rows and marks of the run's Gantt chart: a row per phase-run, then one per
    processor of it (its bar runs from the phase's start to its report)."""
    bars: list[Bar] = []
    marks: list[Mark] = []
    for run in _phase_runs(pipeline, records):
        row = len(bars)
        took = (run.end - run.start).total_seconds()
        bars.append(
            Bar(
                f"{run.phase.name} · attempt {run.attempt}",
                run.start,
                run.end,
                BarKind.PHASE,
                f"{run.phase.name} attempt {run.attempt}: {took:.0f}s"
                + ("" if run.trigger else " (not triggered)"),
            )
        )
        for entry, kind in ((run.start_signal, "start"), (run.trigger, "claimed")):
            if entry is not None:
                marks.append(Mark(row, entry.claimed_at, kind, _entry_title(entry, "claimed")))
                if entry.delivered_at is not None:
                    marks.append(
                        Mark(row, entry.delivered_at, "delivered", _entry_title(entry, "delivered"))
                    )
        for processor in _processors(run):
            _processor_row(run, processor, bars, marks)
    return bars, marks


def _processors(run: _PhaseRun) -> list[str]:
    names = list(run.phase.all_processors)
    names += sorted({c.processor for c in run.reports} - set(names))
    return names


def _processor_row(run: _PhaseRun, processor: str, bars: list[Bar], marks: list[Mark]) -> None:
    reports = [c for c in run.reports if c.processor == processor]
    success = next((c for c in reports if c.status is Status.SUCCESS), None)
    optional = " (optional)" if processor in run.phase.optional else ""
    row = len(bars)
    if success is not None:
        late = run.deadline is not None and success.occurred_at > run.deadline
        kind = BarKind.LATE if late else BarKind.SUCCESS
        end, what = success.occurred_at, "late" if late else "succeeded"
    elif reports:
        kind, end, what = BarKind.FAILED, reports[-1].occurred_at, "failed"
    else:
        kind, end, what = BarKind.MISSING, run.end, "has not reported"
    bars.append(
        Bar(
            processor + optional,
            run.start,
            max(end, run.start),
            kind,
            f"{processor} {what} ({(end - run.start).total_seconds():.0f}s)",
            indent=True,
        )
    )
    for report in reports:
        marks.append(
            Mark(
                row,
                report.occurred_at,
                report.status.value,
                f"{processor} {report.status.value} at {report.occurred_at:%H:%M:%S}"
                + (f" · {report.correlation_id}" if report.correlation_id else ""),
            )
        )


def _entry_title(entry: OutboxEntry, what: str) -> str:
    trigger = entry.trigger
    moment = entry.claimed_at if what == "claimed" else entry.delivered_at
    return (
        f"{trigger.reason.value} {trigger.trigger_id} {what} at {moment:%H:%M:%S}"
        if moment
        else trigger.trigger_id
    )


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "—"


def _phase_table(pipeline: Pipeline, records: RunRecords) -> str:
    rows = []
    for run in _phase_runs(pipeline, records):
        failed, late = [], []
        for processor in _processors(run):
            reports = [c for c in run.reports if c.processor == processor]
            success = next((c for c in reports if c.status is Status.SUCCESS), None)
            if any(c.status is Status.FAILED for c in reports):
                failed.append(processor if success is None else f"{processor} (then succeeded)")
            if success is not None and run.deadline and success.occurred_at > run.deadline:
                late.append(processor)
        took = (run.end - run.start).total_seconds()
        state = "triggered" if run.trigger else ("running" if run.current else "superseded")
        rows.append(
            f'<tr data-phase="{escape(run.phase.name)}" data-attempt="{run.attempt}">'
            f"<td>{escape(run.phase.name)}</td><td>{run.attempt}</td><td>{state}</td>"
            f"<td>{_time(run.start)}</td><td>{took:.0f}s</td>"
            f'<td class="problem">{escape(", ".join(failed))}</td>'
            f'<td class="late">{escape(", ".join(late))}</td></tr>'
        )
    return (
        "<table id=phases><thead><tr><th>phase</th><th>attempt</th><th>state</th>"
        "<th>started</th><th>duration</th><th>failed</th><th>late</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _trigger_table(records: RunRecords) -> str:
    rows = []
    for entry in sorted(records.triggers, key=lambda e: e.claimed_at):
        trigger = entry.trigger
        if entry.delivered_at is not None:
            latency = (entry.delivered_at - entry.claimed_at).total_seconds()
            delivered = f"{_time(entry.delivered_at)} (+{latency:.2f}s)"
        else:
            delivered = f'<span class="pending">pending, {entry.attempts} tries</span>'
        error = (
            f'<span class="problem">{escape(entry.last_error)}</span>' if entry.last_error else ""
        )
        rows.append(
            f'<tr data-trigger="{escape(trigger.trigger_id)}"><td class="mono">'
            f"{escape(trigger.trigger_id)}</td><td>{escape(trigger.phase)}</td>"
            f"<td>{escape(trigger.reason.value)}</td><td>{trigger.attempt}</td>"
            f"<td>{escape(', '.join(trigger.ready_phases or ()) or '—')}</td>"
            f"<td>{_time(entry.claimed_at)}</td><td>{delivered}</td><td>{error}</td></tr>"
        )
    return (
        "<table id=triggers><thead><tr><th>trigger id</th><th>phase</th><th>reason</th>"
        "<th>attempt</th><th>ready phases</th><th>claimed</th><th>delivered</th>"
        f"<th>last error</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


_LEGEND = "".join(
    f'<span><i class="swatch" style="background:{colour}"></i>{name}</span>'
    for name, colour in (
        ("phase", "#9bb7d4"),
        ("succeeded", "#3a9d5d"),
        ("late", "#e08a00"),
        ("failed", "#c62828"),
        ("not reported", "#b0b0b0"),
        ("trigger claimed", "#1d1d1f"),
        ("delivered", "#1565c0"),
        ("start signal", "#6a1b9a"),
    )
)


def render_run_page(pipeline: Pipeline, records: RunRecords) -> str:
    """The HTML page of one run."""
    bars, marks = build_timeline(pipeline, records)
    key = escape(records.run_key)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{key} · phasegate · {escape(pipeline.name)}</title><style>{STYLE}</style>"
        f'</head><body><p><a href="../">← all runs</a></p>'
        f"<h1>run {key}</h1>"
        f'<div class="meta">{escape(pipeline.name)} · {_time(records.now)} UTC</div>'
        f"<h2>Timeline</h2><div class=legend>{_LEGEND}</div>{timeline_svg(bars, marks)}"
        f"<h2>Phases</h2>{_phase_table(pipeline, records)}"
        f"<h2>Triggers and start signals</h2>{_trigger_table(records)}"
        "</body></html>"
    )


def duration_charts(runtime: Runtime, runs: int = CHART_RUNS) -> str:
    """Each phase's duration over its last ``runs`` executions, as small inline charts."""
    charts = []
    for phase in runtime.pipeline.phases:
        executions: Sequence[PhaseExecution] = runtime.tracker.phase_executions(
            phase.name, limit=runs * 2
        )
        latest: dict[str, PhaseExecution] = {}
        for execution in executions:  # one point per run: its latest attempt
            known = latest.get(execution.run_key)
            if known is None or execution.attempt > known.attempt:
                latest[execution.run_key] = execution
        chosen = sorted(latest.values(), key=lambda e: e.triggered_at)[-runs:]
        points = [(e.run_key, e.duration_seconds) for e in chosen]
        limit = phase.timeout.total_seconds() if phase.timeout else None
        charts.append(duration_chart_svg(phase.name, points, limit_seconds=limit))
    return f'<div class="charts" id="durations">{"".join(charts)}</div>'


def run_link(run_key: str) -> str:
    """The dashboard's link to the page of ``run_key``, relative to the front page."""
    return f'<a href="runs/{quote(run_key, safe="")}">{escape(run_key)}</a>'
