"""Health under a probe storm: one check per dependency, a timeout per check, no real waits."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from phasegate.health import HealthChecker
from phasegate.redact import Scrubber
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
        clock=FakeClock(),
    )
    health.start()
    app = FastAPI()
    waiting = 0

    @app.get("/health")
    async def probe() -> JSONResponse:
        nonlocal waiting
        waiting += 1
        report, cached = await health.report()
        return JSONResponse(
            health.to_dict(report, cached), status_code=200 if report.healthy else 503
        )

    async def storm() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            probes = [asyncio.create_task(client.get("/health")) for _ in range(500)]
            while waiting < 500:  # every probe is now waiting on the one slow check
                await asyncio.sleep(0)
            release.set()
            return await asyncio.gather(*probes)

    answers = asyncio.run(storm())
    assert {a.status_code for a in answers} == {200}
    assert health.runs == {"primary_store": 1, "backup_store": 1}
    health.stop()


def test_a_hung_dependency_answers_degraded_when_its_timeout_expires() -> None:
    """A check that never returns makes the report unhealthy once the per-check timer fires."""
    hang = threading.Event()
    waited: list[float] = []

    async def timer(seconds: float) -> None:
        waited.append(seconds)  # the timeout "expires" at once: no real wait

    health = HealthChecker(
        {"primary_store": lambda: hang.wait(30) and None},
        timeout=2.0,
        clock=FakeClock(),
        timer=timer,
    )
    health.start()
    report, cached = asyncio.run(health.report())
    hang.set()
    assert not report.healthy
    assert not cached
    assert report.dependencies["primary_store"].error == "timed out after 2.0s"
    assert waited == [2.0]
    health.stop()


def test_the_cache_expires_after_its_ttl() -> None:
    """Within the TTL the cached answer is served; after it, checks run again."""
    clock = FakeClock()
    health = HealthChecker({"dep": lambda: None}, ttl=30, clock=clock)
    health.start()
    asyncio.run(health.report())
    clock.advance(29)
    report, cached = asyncio.run(health.report())
    assert cached
    assert health.to_dict(report, cached)["cache_age_seconds"] == 29.0
    clock.advance(2)
    assert asyncio.run(health.report())[1] is False
    assert health.runs["dep"] == 2
    health.stop()


def test_uptime_and_latency_come_from_the_injected_clock() -> None:
    """No real clock beside the injected one: uptime is what the fake clock says."""
    clock = FakeClock()
    health = HealthChecker({"dep": lambda: clock.advance(0.004)}, clock=clock)
    health.start()
    clock.advance(120)
    report, cached = asyncio.run(health.report())
    body = health.to_dict(report, cached)
    assert body["uptime_seconds"] == 120.0
    assert body["dependencies"]["dep"]["latency_ms"] == 4.0
    health.stop()


def test_a_failing_check_reports_its_error_with_secrets_masked() -> None:
    """The error names the failure but not the secret the runtime's scrubber knows."""

    def failing() -> None:
        raise ConnectionError("refused by db with password s3cret-pw")

    health = HealthChecker({"dep": failing}, clock=FakeClock(), scrubber=Scrubber(["s3cret-pw"]))
    health.start()
    report, _ = asyncio.run(health.report())
    assert report.dependencies["dep"].error == "ConnectionError: refused by db with password ***"
    health.stop()


def test_the_checker_runs_no_thread_until_started() -> None:
    """report() before start() is a programming error, said plainly."""
    health = HealthChecker({"dep": lambda: None}, clock=FakeClock())
    with pytest.raises(RuntimeError, match=r"start\(\) was not called"):
        asyncio.run(health.report())
