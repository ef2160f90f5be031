"""The dashboard in a real browser: headless Chromium sees the grid with the right states."""

from __future__ import annotations

from pathlib import Path

import pytest

from phasegate.service import create_app
from support import CHROMIUM, Harness, UvicornThread, require_chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.mark.slow
def test_headless_chromium_sees_the_grid_with_the_right_states(harness: Harness) -> None:
    """Recorded runs show as rows, phases as coloured cells; a screenshot is saved."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    for processor in ("api", "files"):
        harness.complete("extract", processor)
    harness.complete("transform", "clean")
    harness.complete("extract", "api", "2026-01-27", status="failed")
    harness.runtime.dispatcher.run_once()
    with UvicornThread(create_app(harness.runtime)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 420})
        page.goto(server.url + "/")
        rows = page.locator("#runs tbody tr")
        assert rows.count() == 2
        newest = page.locator('tr[data-run="2026-01-28"] td')
        assert newest.evaluate_all("cells => cells.map(c => c.dataset.state)") == [
            "triggered",
            "waiting",
            "not_started",
        ]
        older = page.locator('tr[data-run="2026-01-27"] td')
        assert older.first.get_attribute("data-state") == "waiting"
        assert "failed: api" in older.first.inner_text()
        assert "breaker" in page.locator(".stores").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
