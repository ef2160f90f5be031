"""Every Prometheus metric phasegate exports, in one place.

Counters the library keeps anyway (tracker, alerter, health checker) are read at
scrape time by a collector; what only events know (triggers, latency) is counted by
an event listener.

Under ``phasegate serve --workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set) every worker
counts into prometheus_client's shared files and ``/metrics`` sums them; the library's
own counters are mirrored into those files by their increase, every second and at
each scrape, and its gauges as the highest any live worker reports.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from phasegate.events import Event, EventKind
from phasegate.resilience.breaker import BreakerState
from phasegate.tracker import StoreRole

if TYPE_CHECKING:
    from phasegate.health import HealthChecker
    from phasegate.runtime import Runtime

_BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class Metrics:
    """The registry and the directly counted metrics of one service."""

    def __init__(self, runtime: Runtime, health: HealthChecker | None = None) -> None:
        self.registry = CollectorRegistry()
        self.shared = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        owner = None if self.shared else self.registry
        self.completions = Counter(
            "phasegate_completions",
            "Completion reports received, by phase, status and outcome.",
            ["phase", "status", "outcome"],
            registry=owner,
        )
        self.rejected = Counter(
            "phasegate_rejected_requests",
            "Requests refused as bad input, by error code.",
            ["code"],
            registry=owner,
        )
        self.triggers = Counter(
            "phasegate_triggers",
            "Phase triggers claimed, by phase and reason.",
            ["phase", "reason"],
            registry=owner,
        )
        self.deliveries = Counter(
            "phasegate_trigger_deliveries",
            "Trigger delivery rounds, by outcome.",
            ["outcome"],
            registry=owner,
        )
        self.trigger_latency = Histogram(
            "phasegate_trigger_latency_seconds",
            "Time from a trigger's claim to its delivery.",
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
                300,
            ),
            registry=owner,
        )
        library = _LibraryCollector(runtime, health)
        self.mirror: _SharedMirror | None = None
        if self.shared:
            self.mirror = _SharedMirror(library)
            self.registry.register(self.mirror)
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        else:
            self.registry.register(library)
        runtime.events.subscribe(self.on_event)

    def start_mirroring(self, interval: float = 1.0) -> Callable[[], None]:
        """Mirror the library's counters into the shared files every ``interval`` seconds
        (multiprocess mode only); returns the stop function, which mirrors once more."""
        mirror = self.mirror
        if mirror is None:
            return lambda: None
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                mirror.sync()

        thread = threading.Thread(target=loop, name="phasegate-metrics-mirror", daemon=True)
        thread.start()

        def finish() -> None:
            stop.set()
            thread.join(interval + 5)
            mirror.sync()

        return finish

    def on_event(self, event: Event) -> None:
        """Count what only events tell."""
        if event.kind is EventKind.TRIGGER_CLAIMED:
            self.triggers.labels(event.phase or "", str(event.details.get("reason", ""))).inc()
        elif event.kind is EventKind.TRIGGER_DELIVERED:
            self.deliveries.labels("delivered").inc()
            latency = event.details.get("latency_seconds")
            if isinstance(latency, float | int):
                self.trigger_latency.observe(max(0.0, float(latency)))
        elif event.kind is EventKind.DELIVERY_FAILED:
            self.deliveries.labels("failed").inc()


class _LibraryCollector(Collector):
    """Reads the library's own counters and states at scrape time."""

    def __init__(self, runtime: Runtime, health: HealthChecker | None) -> None:
        self.runtime = runtime
        self.health = health

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield from self._stores()
        yield from self._alerts()
        if self.health is not None:
            checks = CounterMetricFamily(
                "phasegate_health_checks",
                "Dependency checks run (not probes answered).",
                labels=["dependency"],
            )
            for name in self.health.checks:
                checks.add_metric([name], self.health.runs.get(name, 0))
            yield checks
        divergence = self.runtime.reconciler.last_divergence
        if divergence is not None:
            gauge = GaugeMetricFamily(
                "phasegate_reconciliation_divergence",
                "Records present in one store but not the other, at the last reconciliation.",
                labels=["kind"],
            )
            for kind, value in divergence.items():
                gauge.add_metric([kind], value)
            yield gauge

    def _stores(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Writes, retries, dual-write results, breakers and the outbox backlog."""
        tracker = self.runtime.tracker
        counts = tracker.counts()
        writes = CounterMetricFamily(
            "phasegate_store_writes",
            "Store operations by store and outcome.",
            labels=["store", "outcome"],
        )
        retries = CounterMetricFamily(
            "phasegate_retries", "Store write retries by store.", labels=["store"]
        )
        for role in StoreRole:
            for outcome in ("ok", "failed", "skipped"):
                writes.add_metric([role.value, outcome], counts.get(f"writes.{role}.{outcome}", 0))
            retries.add_metric([role.value], counts.get(f"retries.{role}", 0))
        yield writes
        yield retries
        dual = CounterMetricFamily(
            "phasegate_dual_writes",
            "Dual-write results: which stores took the record.",
            labels=["result"],
        )
        for result in ("both", "primary_only", "backup_only", "none"):
            dual.add_metric([result], counts.get(f"dual_write.{result}", 0))
        yield dual
        state = GaugeMetricFamily(
            "phasegate_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["store"],
        )
        trips = CounterMetricFamily(
            "phasegate_breaker_trips", "Times a breaker opened.", labels=["store"]
        )
        for role, breaker in (
            (StoreRole.PRIMARY, tracker.primary_breaker),
            (StoreRole.BACKUP, tracker.backup_breaker),
        ):
            state.add_metric([role.value], _BREAKER_VALUE[breaker.state])
            trips.add_metric([role.value], breaker.trips)
        yield state
        yield trips
        backlog = GaugeMetricFamily(
            "phasegate_outbox_backlog", "Claimed triggers not yet delivered."
        )
        try:
            horizon = tracker.clock.now() + timedelta(days=36500)
            backlog.add_metric([], len(tracker.pending_triggers(horizon, 10_000)))
        except Exception:  # noqa: BLE001 - a scrape must not fail because a store is down
            backlog.add_metric([], float("nan"))
        yield backlog

    def _alerts(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Alerts by outcome, and each sink's failures in a row."""
        alerts = CounterMetricFamily("phasegate_alerts", "Alerts by outcome.", labels=["outcome"])
        alerter = self.runtime.alerter
        alert_counts = alerter.counts if alerter is not None else {}
        for outcome in ("sent", "failed", "dropped", "folded"):
            alerts.add_metric([outcome], alert_counts.get(outcome, 0))
        yield alerts
        if alerter is not None:
            failing = alerter.failing_sinks()
            sinks = GaugeMetricFamily(
                "phasegate_alert_sink_failures_in_a_row",
                "Alerts each sink failed to deliver since its last success (0: working).",
                labels=["sink"],
            )
            for sink in alerter.sinks:
                sinks.add_metric([sink.name], failing.get(sink.name, 0))
            yield sinks


class _SharedMirror(Collector):
    """Copies one worker's library counters into the multiprocess files: counters by
    their increase since the last copy, gauges as this worker's value (the exposition
    shows the highest of the live workers). Yields nothing itself: registered before
    the multiprocess collector, it refreshes this worker's share before the files are read.
    """

    def __init__(self, library: _LibraryCollector) -> None:
        self.library = library
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        self.sync()
        yield from ()

    def sync(self) -> None:
        """Bring this worker's share of the shared files up to date."""
        with self._lock:
            for family in self.library.collect():
                for sample in family.samples:
                    names = tuple(sorted(sample.labels))
                    values = [sample.labels[name] for name in names]
                    if family.type == "counter":
                        key = (family.name, tuple(zip(names, values, strict=True)))
                        delta = sample.value - self._seen.get(key, 0.0)
                        if delta > 0:
                            self._counter(family, names).labels(*values).inc(delta)
                            self._seen[key] = sample.value
                    else:
                        gauge = self._gauge(family, names)
                        (gauge.labels(*values) if names else gauge).set(sample.value)

    def _counter(
        self, family: CounterMetricFamily | GaugeMetricFamily, names: tuple[str, ...]
    ) -> Counter:
        if family.name not in self._counters:
            self._counters[family.name] = Counter(
                family.name, family.documentation, names, registry=None
            )
        return self._counters[family.name]

    def _gauge(
        self, family: CounterMetricFamily | GaugeMetricFamily, names: tuple[str, ...]
    ) -> Gauge:
        if family.name not in self._gauges:
            self._gauges[family.name] = Gauge(
                family.name,
                family.documentation,
                names,
                registry=None,
                multiprocess_mode="livemax",
            )
        return self._gauges[family.name]
