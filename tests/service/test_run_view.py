"""The run page and the duration charts: what they draw, from the records alone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from phasegate.service import create_app
from phasegate.service.dashboard_charts import (
    Bar,
    BarKind,
    Mark,
    duration_chart_svg,
    timeline_svg,
)
from phasegate.service.dashboard_run import build_timeline, read_run
from phasegate.testing import FakeClock
from rigs import RUN, MemoryRig, scripted_run

T0 = datetime(2026, 1, 28, 6, 0, tzinfo=UTC)


@pytest.fixture
def rig(clock: FakeClock) -> Iterator[MemoryRig]:
    harness = scripted_run(clock)
    yield harness
    harness.close()


def test_the_timeline_has_a_row_per_phase_run_and_per_processor(rig: MemoryRig) -> None:
    """Each phase-run and each of its processors gets a bar; kinds say failed, late, missing."""
    bars, marks = build_timeline(rig.runtime.pipeline, read_run(rig.runtime, RUN))
    labels = [b.label for b in bars]
    assert labels[:4] == ["ingest · attempt 1", "boxscores", "odds", "notes (optional)"]
    assert "predict · attempt 2" in labels
    kinds = {b.label: b.kind for b in bars if b.indent and b.label != "model"}
    assert kinds["boxscores"] is BarKind.SUCCESS
    assert kinds["odds"] is BarKind.LATE
    assert kinds["notes (optional)"] is BarKind.MISSING
    assert [m.kind for m in marks if m.row == 1] == ["failed", "success"]
    assert {m.kind for m in marks} >= {"claimed", "delivered", "start", "success", "failed"}


def test_the_timeline_svg_draws_every_bar_and_mark_and_loads_nothing() -> None:
    """Pure rendering: one rect per bar, one shape per mark, titles escaped, no URLs."""
    bars = [
        Bar("phase <a>", T0, T0 + timedelta(minutes=5), BarKind.PHASE, "phase"),
        Bar("p1", T0, T0 + timedelta(minutes=2), BarKind.FAILED, "p1 failed", indent=True),
    ]
    marks = [Mark(0, T0 + timedelta(minutes=5), "claimed", "trigger & co")]
    svg = timeline_svg(bars, marks)
    assert svg.count("<rect") == 2
    assert svg.count("<path") == 1
    assert "phase &lt;a&gt;" in svg
    assert "trigger &amp; co" in svg
    assert 'data-kind="failed"' in svg
    assert not re.search(r"(href|src)=", svg)
    assert "nothing recorded" in timeline_svg([], [])


def test_the_duration_chart_plots_each_run_and_the_timeout() -> None:
    """A point per run, oldest first, and the timeout as a dashed line above them."""
    svg = duration_chart_svg(
        "ingest", [("d1", 60.0), ("d2", 90.0), ("d3", 400.0)], limit_seconds=600
    )
    assert svg.count("<circle") == 3
    assert 'class="limit"' in svg
    assert "last 7m" in svg
    assert "d3: 7m" in svg
    assert "no runs yet" in duration_chart_svg("ingest", [])


def test_the_run_page_lists_triggers_with_ids_and_delivery_times(rig: MemoryRig) -> None:
    """GET /runs/{run_key}: the timeline, the phases with failures and lateness, the triggers."""
    client = TestClient(create_app(rig.runtime))
    page = client.get(f"/runs/{RUN}")
    assert page.status_code == 200
    html = page.text
    assert "<svg" in html
    assert 'class="timeline"' in html
    for entry in rig.tracker.triggers(RUN):
        assert entry.trigger.trigger_id in html
    assert html.count("<tr data-trigger=") == len(rig.tracker.triggers(RUN))
    assert re.search(r'data-phase="ingest" data-attempt="1">.*?class="late">odds<', html)
    assert re.search(
        r'data-phase="predict" data-attempt="1"><td>predict</td><td>1</td><td>triggered', html
    )
    assert re.search(
        r'data-phase="predict" data-attempt="2"><td>predict</td><td>2</td><td>triggered', html
    )
    assert "rerun" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert client.get("/runs/2026-02-01").status_code == 404
    assert client.get("/runs/yesterday").status_code == 422


def test_the_front_page_links_each_run_and_charts_each_phase(rig: MemoryRig) -> None:
    """The grid's run keys link to their pages; a duration chart per phase sits above it."""
    html = TestClient(create_app(rig.runtime)).get("/").text
    assert f'href="runs/{RUN}"' in html
    assert html.count('class="durations"') == 4
