"""Charts for the dashboard as inline SVG, drawn on the server: a run's timeline (Gantt)
and a phase's duration over recent runs. Pure functions of records; no scripts, no
external assets, so the page loads nothing from outside."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from html import escape

LABEL_WIDTH = 230
ROW_HEIGHT = 20
AXIS_HEIGHT = 24
COLOURS = {
    "phase": "#9bb7d4",
    "success": "#3a9d5d",
    "failed": "#c62828",
    "late": "#e08a00",
    "missing": "#b0b0b0",
    "claimed": "#1d1d1f",
    "delivered": "#1565c0",
    "start": "#6a1b9a",
}


class BarKind(StrEnum):
    """What a bar of the timeline shows, and so its colour."""

    PHASE = "phase"
    SUCCESS = "success"
    FAILED = "failed"
    LATE = "late"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Bar:
    """One row of the timeline: a phase-run, or one processor's part of it."""

    label: str
    start: datetime
    end: datetime
    kind: BarKind
    title: str
    indent: bool = False


@dataclass(frozen=True, slots=True)
class Mark:
    """A moment on a row: a report, a trigger claimed or delivered, a start signal."""

    row: int
    at: datetime
    kind: str
    title: str


@dataclass(frozen=True, slots=True)
class _Scale:
    start: datetime
    seconds: float
    width: float

    def x(self, moment: datetime) -> float:
        offset = (moment - self.start).total_seconds() / self.seconds
        return LABEL_WIDTH + max(0.0, min(1.0, offset)) * self.width


def timeline_svg(bars: Sequence[Bar], marks: Sequence[Mark], *, width: int = 960) -> str:
    """A Gantt chart: one row per bar, marks drawn on their rows, a time axis on top."""
    if not bars:
        return '<p class="empty">nothing recorded for this run yet</p>'
    moments = [b.start for b in bars] + [b.end for b in bars] + [m.at for m in marks]
    first, last = min(moments), max(moments)
    span = max((last - first).total_seconds(), 1.0)
    scale = _Scale(first - timedelta(seconds=span * 0.01), span * 1.02, width - LABEL_WIDTH - 10)
    height = AXIS_HEIGHT + ROW_HEIGHT * len(bars) + 6
    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="timeline of the run">',
        _axis(scale, height),
    ]
    for row, bar in enumerate(bars):
        parts.append(_bar(row, bar, scale))
    for mark in marks:
        parts.append(_mark(mark, scale))
    parts.append("</svg>")
    return "".join(parts)


def _axis(scale: _Scale, height: int) -> str:
    ticks = []
    for step in range(6):
        moment = scale.start + timedelta(seconds=scale.seconds * step / 5)
        x = scale.x(moment)
        anchor = "end" if step == 5 else "middle"
        ticks.append(
            f'<line x1="{x:.1f}" y1="{AXIS_HEIGHT - 4}" x2="{x:.1f}" y2="{height}" '
            'stroke="#e4e4e4"/>'
            f'<text x="{x:.1f}" y="{AXIS_HEIGHT - 8}" font-size="11" fill="#666" '
            f'text-anchor="{anchor}">{moment:%H:%M:%S}</text>'
        )
    return "".join(ticks)


def _bar(row: int, bar: Bar, scale: _Scale) -> str:
    y = AXIS_HEIGHT + row * ROW_HEIGHT
    x1, x2 = scale.x(bar.start), scale.x(bar.end)
    label_x = 18 if bar.indent else 4
    weight = "400" if bar.indent else "600"
    dash = ' stroke-dasharray="4 3" fill-opacity="0.35"' if bar.kind is BarKind.MISSING else ""
    return (
        f'<g class="bar {bar.kind.value}" data-kind="{bar.kind.value}">'
        f'<text x="{label_x}" y="{y + 14}" font-size="12" font-weight="{weight}" '
        f'fill="#1d1d1f">{escape(bar.label)}</text>'
        f'<rect x="{x1:.1f}" y="{y + 4}" width="{max(x2 - x1, 2):.1f}" height="{ROW_HEIGHT - 8}" '
        f'rx="3" fill="{COLOURS[bar.kind.value]}" stroke="{COLOURS[bar.kind.value]}"{dash}>'
        f"<title>{escape(bar.title)}</title></rect></g>"
    )


def _mark(mark: Mark, scale: _Scale) -> str:
    x = scale.x(mark.at)
    y = AXIS_HEIGHT + mark.row * ROW_HEIGHT + ROW_HEIGHT / 2
    colour = COLOURS.get(mark.kind, "#1d1d1f")
    title = f"<title>{escape(mark.title)}</title>"
    if mark.kind in {"claimed", "delivered", "start"}:
        diamond = (
            f"M{x:.1f} {y - 7:.1f} L{x + 6:.1f} {y:.1f} L{x:.1f} {y + 7:.1f} L{x - 6:.1f} {y:.1f} Z"
        )
        shape = f'<path d="{diamond}" fill="{colour}">{title}</path>'
    else:
        dot = f'cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}" stroke="#fff"'
        shape = f"<circle {dot}>{title}</circle>"
    kind = escape(mark.kind)
    return f'<g class="mark {kind}" data-kind="{kind}">{shape}</g>'


def duration_chart_svg(
    label: str,
    durations: Sequence[tuple[str, float]],
    *,
    limit_seconds: float | None = None,
    width: int = 260,
    height: int = 64,
) -> str:
    """A small line chart of ``(run_key, seconds)``, oldest first, with the timeout dashed.

    A phase getting slower shows as a rising line before it crosses its timeout.
    """
    if not durations:
        return (
            f'<svg class="durations" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" role="img" aria-label="{escape(label)}: no runs yet">'
            f'<text x="4" y="{height / 2:.0f}" font-size="11" fill="#888">no runs yet</text></svg>'
        )
    top = max([s for _, s in durations] + ([limit_seconds] if limit_seconds else [])) * 1.1
    top = max(top, 1.0)
    pad, plot_w, plot_h = 4, width - 8, height - 18

    def point(index: int, seconds: float) -> tuple[float, float]:
        x = pad + (plot_w * index / max(len(durations) - 1, 1))
        return x, 4 + plot_h * (1 - seconds / top)

    points = [point(i, s) for i, (_, s) in enumerate(durations)]
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f} {y:.1f}" for i, (x, y) in enumerate(points))
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#1565c0">'
        f"<title>{escape(key)}: {_seconds(s)}</title></circle>"
        for (x, y), (key, s) in zip(points, durations, strict=True)
    )
    limit = ""
    if limit_seconds:
        _, y = point(0, limit_seconds)
        limit = (
            f'<line class="limit" x1="{pad}" y1="{y:.1f}" x2="{width - pad}" y2="{y:.1f}" '
            f'stroke="#c62828" stroke-dasharray="4 3"><title>timeout '
            f"{_seconds(limit_seconds)}</title></line>"
        )
    latest = durations[-1][1]
    return (
        f'<svg class="durations" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}: duration of the last {len(durations)} runs">'
        f'{limit}<path d="{path}" fill="none" stroke="#1565c0" stroke-width="1.5"/>{dots}'
        f'<text x="{pad}" y="{height - 3}" font-size="11" fill="#444">'
        f"{escape(label)} · last {_seconds(latest)} · {len(durations)} runs</text></svg>"
    )


def _seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
