"""The dashboard: a runs × phases grid, server-rendered, self-refreshing, no external assets."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import TYPE_CHECKING

from phasegate import __version__
from phasegate.errors import PhasegateError
from phasegate.model import PhaseState
from phasegate.orchestrator import PhaseStatus
from phasegate.service.dashboard_run import duration_charts, run_link

if TYPE_CHECKING:
    from phasegate.runtime import Runtime

REFRESH_SECONDS = 10

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}
.meta{color:#666;margin-bottom:16px}
.stores{display:flex;gap:12px;margin-bottom:16px}
.store{padding:8px 12px;border-radius:6px;background:#fff;border:1px solid #ddd}
.store b{margin-right:6px}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ddd;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f0f0f0}
tbody th{white-space:nowrap}
td.cell{min-width:150px}
.state{font-weight:600}
.not_started{background:#f5f5f5;color:#888}
.waiting{background:#fff7d6}
.complete{background:#dff1ff}
.triggered{background:#e3f6e8}
.timed_out{background:#fde2e1}
.missing{color:#a33;font-size:12px}
.failed{color:#a33;font-size:12px;font-weight:600}
.trigger{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;color:#333}
.closed{color:#1b7f3b}.half_open{color:#9a6b00}.open{color:#b3261e}
.charts{display:flex;flex-wrap:wrap;gap:12px;margin:0 0 16px}
svg.durations{background:#fff;border:1px solid #ddd;border-radius:4px}
"""


def _time(moment: datetime | None) -> str:
    return moment.strftime("%H:%M:%S") if moment else "—"


def _cell(status: PhaseStatus) -> str:
    state = status.state.value
    parts = [
        f'<div class="state">{escape(state.replace("_", " "))} '
        f"{len(status.succeeded)}/{len(status.expected)}</div>"
    ]
    if status.failed:
        parts.append(f'<div class="failed">failed: {escape(", ".join(status.failed))}</div>')
    if status.missing and status.state is not PhaseState.NOT_STARTED and status.trigger is None:
        parts.append(f'<div class="missing">missing: {escape(", ".join(status.missing))}</div>')
    if status.trigger is not None:
        entry = status.trigger
        delivered = (
            f"delivered {_time(entry.delivered_at)}" if entry.delivered else "pending delivery"
        )
        parts.append(
            f'<div class="trigger" title="{escape(entry.trigger.trigger_id)}">'
            f"{escape(entry.trigger.trigger_id[:8])} · {escape(entry.trigger.reason.value)}<br>"
            f"claimed {_time(entry.claimed_at)} · {escape(delivered)}</div>"
        )
    return f'<td class="cell {escape(state)}" data-state="{escape(state)}">{"".join(parts)}</td>'


def render_dashboard(runtime: Runtime, *, limit: int = 14) -> str:
    """The dashboard HTML for the ``limit`` most recent runs."""
    pipeline = runtime.pipeline
    tracker = runtime.tracker
    rows: list[str] = []
    problem = charts = ""
    try:
        for run_key in tracker.list_runs(limit):
            cells = "".join(_cell(s) for s in runtime.orchestrator.run_status(run_key))
            rows.append(
                f'<tr data-run="{escape(run_key)}"><th>{run_link(run_key)}</th>{cells}</tr>'
            )
        charts = duration_charts(runtime)
    except PhasegateError as exc:
        problem = f'<p class="failed">cannot read the stores: {escape(str(exc))}</p>'
    stores = "".join(
        f'<div class="store"><b>{escape(name)}</b>'
        f'breaker <span class="{escape(breaker.state.value)}">{escape(breaker.state.value)}</span>'
        f" · trips {breaker.trips}</div>"
        for name, breaker in (
            ("primary", tracker.primary_breaker),
            ("backup", tracker.backup_breaker),
        )
    )
    header = "".join(f"<th>{escape(p.name)}</th>" for p in pipeline.phases)
    body = (
        "".join(rows)
        or f'<tr><td colspan="{len(pipeline.phases) + 1}">no runs recorded yet</td></tr>'
    )
    now = tracker.clock.now().strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>phasegate · {escape(pipeline.name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>phasegate · {escape(pipeline.name)}</h1>"
        f'<div class="meta">{escape(now)} · refreshes every {REFRESH_SECONDS}s · '
        f"transport {escape(runtime.transport.describe())} · v{__version__}</div>"
        f'<div class="stores">{stores}</div>{problem}{charts}'
        f'<table id="runs"><thead><tr><th>run key</th>{header}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
        "</body></html>"
    )


def render_login(pipeline: str, *, error: str | None = None) -> str:
    """The page asking for the token once; the dashboard then keeps a session cookie."""
    problem = f'<p class="failed">{escape(error)}</p>' if error else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>phasegate · {escape(pipeline)} · sign in</title><style>{_STYLE}</style>"
        "</head><body>"
        f"<h1>phasegate · {escape(pipeline)}</h1>"
        '<div class="meta">This service needs its token (or its read token) to show runs.</div>'
        f"{problem}"
        '<form method="post" action="login">'
        '<label>token <input type="password" name="token" autocomplete="current-password" '
        "autofocus required></label> <button>open the dashboard</button></form>"
        "</body></html>"
    )
