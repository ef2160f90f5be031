"""Every Prometheus metric phasegate exports, in one place.

Counters the library keeps anyway (tracker, alerter, health checker) are read at
scrape time by a collector; what only events know (triggers, latency) is counted by
an event listener.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
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
        self.completions = Counter(
            "phasegate_completions",
            "Completion reports received, by phase, status and outcome.",
            ["phase", "status", "outcome"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "phasegate_rejected_requests",
            "Requests refused as bad input, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.triggers = Counter(
            "phasegate_triggers",
            "Phase triggers claimed, by phase and reason.",
            ["phase", "reason"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "phasegate_trigger_deliveries",
            "Trigger delivery rounds, by outcome.",
            ["outcome"],
            registry=self.registry,
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
            registry=self.registry,
        )
        self.registry.register(_LibraryCollector(runtime, health))
        runtime.events.subscribe(self.on_event)

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
