"""Health under a probe storm: one check per dependency, a timeout per check."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from phasegate.health import HealthChecker
from phasegate.testing import FakeClock


def test_a_storm_of_500_probes_runs_each_check_once() -> None:
    """500 concurrent /health requests while a check is slow: every dependency checked once."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    release = threading.Event()
    health = HealthChecker(
        {"primary_store": lambda: release.wait(5) and None, "backup_store": lambda: None},
        ttl=30,
        timeout=10,
    )
    app = FastAPI()

    @app.get("/health")
    async def probe() -> JSONResponse:
        report, cached = await health.report()
        return JSONResponse(
            health.to_dict(report, cached), status_code=200 if report.healthy else 503
        )

    async def storm() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            probes = [asyncio.create_task(client.get("/health")) for _ in range(500)]
            await asyncio.sleep(0.3)  # every probe is now waiting on the one slow check
            release.set()
            return await asyncio.gather(*probes)

    answers = asyncio.run(storm())
    assert {a.status_code for a in answers} == {200}
    assert health.runs == {"primary_store": 1, "backup_store": 1}
    health.close()


def test_a_hung_dependency_answers_degraded_within_its_timeout() -> None:
    """A check that never returns makes the report unhealthy after the per-check timeout."""
    hang = threading.Event()
    health = HealthChecker({"primary_store": lambda: hang.wait(30) and None}, timeout=0.2)
    started = time.perf_counter()
    report, cached = asyncio.run(health.report())
    elapsed = time.perf_counter() - started
    hang.set()
    assert not report.healthy
    assert not cached
    assert report.dependencies["primary_store"].error == "timed out after 0.2s"
    assert elapsed < 2
    health.close()


def test_the_cache_expires_after_its_ttl() -> None:
    """Within the TTL the cached answer is served; after it, checks run again."""
    clock = FakeClock()
    health = HealthChecker({"dep": lambda: None}, ttl=30, clock=clock)
    asyncio.run(health.report())
    clock.advance(29)
    report, cached = asyncio.run(health.report())
    assert cached
    assert health.to_dict(report, cached)["cache_age_seconds"] == 29.0
    clock.advance(2)
    assert asyncio.run(health.report())[1] is False
    assert health.runs["dep"] == 2
    health.close()
