"""Cached, single-flight dependency checks: a storm of probes runs each check once.

Every check has its own timeout, so a hung store makes the probe answer "degraded"
instead of hanging with it. Checks run on the checker's own threads, started by
:meth:`HealthChecker.start` and stopped by :meth:`HealthChecker.stop`; every time it
reads or waits on comes from the injected clock and timer.

A check that is a store's or a transport's bound ``ping`` (as the service's are) is
also named: its ``kind`` (``firestore``, ``bigquery``, ``pubsub``, ``postgresql``, ...)
and a ``description`` of where it is (``firestore://PROJECT (prefix NAME)``), never
with credentials.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from phasegate.clock import SYSTEM_CLOCK, Clock, utc_iso
from phasegate.redact import SCRUBBER, Scrubber, redact_url
from phasegate.stores.gcp_urls import BigQueryLocation, FirestoreLocation

Timer = Callable[[float], Awaitable[None]]
"""Waits a number of seconds in the event loop (``asyncio.sleep``; tests inject their own)."""


@dataclass(frozen=True, slots=True)
class DependencyHealth:
    """One dependency's answer, with what it is when that is known."""

    healthy: bool
    latency_ms: float
    error: str | None = None
    kind: str | None = None
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"healthy", "latency_ms"}`` plus ``kind``, ``description`` and ``error``
        when there are any."""
        data: dict[str, Any] = {"healthy": self.healthy, "latency_ms": round(self.latency_ms, 2)}
        if self.kind is not None:
            data["kind"] = self.kind
        if self.description is not None:
            data["description"] = self.description
        if self.error is not None:
            data["error"] = self.error
        return data


def describe_dependency(target: object) -> tuple[str, str] | None:
    """``(kind, description)`` of a store or transport, without secrets; None if unknown.

    Fault wrappers (``inner``) are looked through.
    """
    while hasattr(target, "inner"):
        target = target.inner
    location = getattr(target, "location", None)
    if isinstance(location, FirestoreLocation):
        where = f"firestore://{location.project} (prefix {location.prefix}"
        if location.database != "(default)":
            where += f", database {location.database}"
        return "firestore", where + ")"
    if isinstance(location, BigQueryLocation):
        return "bigquery", f"bigquery://{location.project}/{location.dataset}"
    url = getattr(target, "url", None)
    if isinstance(url, str) and hasattr(target, "engines"):
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        return scheme, redact_url(url)
    describe = getattr(target, "describe", None)
    if callable(describe):
        text = str(describe())
        return text.split(":", 1)[0], text
    return None


def _described(fn: Callable[[], None]) -> tuple[str, str] | None:
    target = getattr(fn, "__self__", None)
    return None if target is None else describe_dependency(target)


@dataclass(frozen=True, slots=True)
class HealthReport:
    """A full health answer, as ``GET /health`` shows it."""

    dependencies: Mapping[str, DependencyHealth]
    checked_at: datetime
    checked_monotonic: float

    @property
    def healthy(self) -> bool:
        """Every dependency is healthy."""
        return all(d.healthy for d in self.dependencies.values())


class HealthChecker:
    """Runs dependency checks at most once per ``ttl`` seconds, however many probes ask."""

    def __init__(
        self,
        checks: Mapping[str, Callable[[], None]],
        *,
        ttl: float = 30.0,
        timeout: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
        service: str = "phasegate",
        version: str = "0.1.0",
        timer: Timer = asyncio.sleep,
        scrubber: Scrubber = SCRUBBER,
    ) -> None:
        self.checks = dict(checks)
        self.described = {name: _described(fn) for name, fn in self.checks.items()}
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self.service = service
        self.version = version
        self.started = clock.monotonic()
        self.runs: Counter[str] = Counter()
        self._timer = timer
        self._scrubber = scrubber
        self._cached: HealthReport | None = None
        self._inflight: asyncio.Future[HealthReport] | None = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Create the check threads' pool (idempotent); :meth:`report` needs it."""
        with self._lock:
            if self._pool is None:
                # Hung checks must not eat the web server's own thread pool.
                self._pool = ThreadPoolExecutor(
                    max_workers=max(4, len(self.checks) * 2), thread_name_prefix="health"
                )

    def stop(self) -> None:
        """Stop the check threads (a hung check is abandoned)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    close = stop

    async def report(self) -> tuple[HealthReport, bool]:
        """The current report and whether it came from the cache."""
        if self._pool is None:
            raise RuntimeError("HealthChecker.start() was not called")
        now = self.clock.monotonic()
        cached = self._cached
        if cached is not None and now - cached.checked_monotonic < self.ttl:
            return cached, True
        loop = asyncio.get_running_loop()
        with self._lock:
            inflight = self._inflight
            owner = inflight is None or inflight.get_loop() is not loop
            if owner:
                inflight = loop.create_future()
                self._inflight = inflight
        assert inflight is not None
        if not owner:
            return await asyncio.shield(inflight), False
        try:
            fresh = await self._check_all()
            self._cached = fresh
            inflight.set_result(fresh)
            return fresh, False
        except BaseException as exc:
            inflight.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight = None

    async def _check_all(self) -> HealthReport:
        results = await asyncio.gather(*(self._check(name, fn) for name, fn in self.checks.items()))
        return HealthReport(
            dependencies=dict(zip(self.checks, results, strict=True)),
            checked_at=self.clock.now(),
            checked_monotonic=self.clock.monotonic(),
        )

    async def _check(self, name: str, fn: Callable[[], None]) -> DependencyHealth:
        pool = self._pool
        if pool is None:
            return DependencyHealth(False, 0.0, "health checker stopped")
        with self._lock:  # probes on several event loops (threads) may check at once
            self.runs[name] += 1
        loop = asyncio.get_running_loop()
        started = self.clock.monotonic()
        check = loop.run_in_executor(pool, fn)
        timer = asyncio.ensure_future(self._timer(self.timeout))
        try:
            await asyncio.wait({check, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        elapsed_ms = (self.clock.monotonic() - started) * 1000
        kind, description = self.described.get(name) or (None, None)
        if not check.done():
            check.cancel()
            error_text: str | None = f"timed out after {self.timeout:.1f}s"
        elif (error := check.exception()) is not None:
            # Any failure is "unhealthy", with its reason (secrets masked).
            error_text = self._scrubber.scrub(f"{type(error).__name__}: {error}")
        else:
            error_text = None
        if description is not None:
            description = self._scrubber.scrub(description)
        return DependencyHealth(error_text is None, elapsed_ms, error_text, kind, description)

    def to_dict(self, report: HealthReport, cached: bool) -> dict[str, Any]:
        """The JSON body of ``GET /health`` (SPEC §5)."""
        return {
            "status": "healthy" if report.healthy else "degraded",
            "service": self.service,
            "version": self.version,
            "uptime_seconds": round(self.clock.monotonic() - self.started, 2),
            "timestamp": utc_iso(self.clock.now().replace(microsecond=0)),
            "dependencies": {name: dep.to_dict() for name, dep in report.dependencies.items()},
            "cached": cached,
            "cache_age_seconds": round(
                max(0.0, self.clock.monotonic() - report.checked_monotonic), 2
            ),
        }
