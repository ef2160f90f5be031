"""The run page in headless Chromium: reached by a click, drawn, nothing fetched outside."""

from __future__ import annotations

from pathlib import Path

import pytest

from phasegate.service import create_app
from phasegate.testing import FakeClock
from rigs import RUN, scripted_run
from support import CHROMIUM, UvicornThread, require_chromium

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.slow
def test_clicking_a_run_opens_its_timeline_in_chromium(clock: FakeClock) -> None:
    """Front page → click the run → Gantt bars, failed and late highlighted; screenshots saved."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    rig = scripted_run(clock, earlier=12)
    outside: list[str] = []
    try:
        with UvicornThread(create_app(rig.runtime)) as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
            )
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.on(
                "request",
                lambda request: (
                    None if request.url.startswith(server.url) else outside.append(request.url)
                ),
            )
            page.goto(server.url + "/")
            assert page.locator("#durations svg.durations").count() == 4
            page.screenshot(path=str(DOCS / "dashboard-durations.png"), full_page=True)
            page.click(f'a[href="runs/{RUN}"]')
            page.wait_for_url(f"**/runs/{RUN}")
            timeline = page.locator("svg.timeline")
            assert timeline.is_visible()
            box = timeline.bounding_box()
            assert box is not None
            assert box["width"] > 900
            assert page.locator('svg.timeline g.bar[data-kind="late"]').count() == 1
            assert page.locator('svg.timeline g.mark[data-kind="failed"]').count() == 1
            assert page.locator('svg.timeline g.bar[data-kind="phase"]').count() == 5
            ids = page.locator("#triggers td.mono").all_inner_texts()
            assert sorted(ids) == sorted(e.trigger.trigger_id for e in rig.tracker.triggers(RUN))
            assert page.locator("#phases td.late").first.inner_text() == "odds"
            page.screenshot(path=str(DOCS / "run-view.png"), full_page=True)
            browser.close()
    finally:
        rig.close()
    assert outside == []
    assert (DOCS / "run-view.png").stat().st_size > 20_000
