"""Everything a pipeline needs at run time, built from its pipeline file in one call."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from phasegate.alerts import Alerter, AlertSink, LogSink
from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.config import Pipeline
from phasegate.dispatch import DELIVERY_POLICY, Dispatcher
from phasegate.errors import StoreError
from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.model import TriggerReason
from phasegate.orchestrator import BatchItem, CompletionResult, Orchestrator
from phasegate.reconcile import Reconciler
from phasegate.recording import Delivery, Recorded, RecordedBatch, Triggered, parse_report
from phasegate.redact import Scrubber
from phasegate.resilience.breaker import BreakerState
from phasegate.resilience.retry import (
    BACKUP_WRITE_POLICY,
    PRIMARY_WRITE_POLICY,
    Jitter,
    RetryPolicy,
)
from phasegate.stores import Store, open_store
from phasegate.timeouts import MaintenancePass, TimeoutChecker, run_maintenance
from phasegate.tracker import ClaimPolicy, CompletionTracker, StoreRole
from phasegate.transports import TriggerTransport, open_transport
from phasegate.unexpected import alerts_unexpected

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tuning:
    """Resilience settings; the defaults are SPEC §3's."""

    primary_policy: RetryPolicy = PRIMARY_WRITE_POLICY
    backup_policy: RetryPolicy = BACKUP_WRITE_POLICY
    breaker_reset: float = 30.0
    delivery_policy: RetryPolicy = DELIVERY_POLICY
    redelivery_base: float = 5.0
    claim_policy: ClaimPolicy = ClaimPolicy.DEFER


def tuning_from(pipeline: Pipeline) -> Tuning:
    """The :class:`Tuning` that the pipeline file's ``[resilience]`` table asks for."""
    settings = pipeline.resilience
    jitter = Jitter(settings.jitter)
    base = settings.retry_base.total_seconds()
    return Tuning(
        primary_policy=RetryPolicy(
            settings.retry_attempts, base, settings.primary_max_delay.total_seconds(), jitter
        ),
        backup_policy=RetryPolicy(
            settings.retry_attempts, base, settings.backup_max_delay.total_seconds(), jitter
        ),
        breaker_reset=settings.breaker_reset.total_seconds(),
        delivery_policy=RetryPolicy(
            settings.delivery_attempts,
            DELIVERY_POLICY.base,
            DELIVERY_POLICY.max_delay,
            DELIVERY_POLICY.jitter,
        ),
        redelivery_base=settings.redelivery_base.total_seconds(),
        claim_policy=ClaimPolicy(settings.claim_fallback),
    )


@dataclass(frozen=True, slots=True)
class Runtime:
    """A pipeline's tracker, orchestrator, dispatcher and timeout checker, wired together."""

    pipeline: Pipeline
    events: EventBus
    tracker: CompletionTracker
    orchestrator: Orchestrator
    transport: TriggerTransport
    dispatcher: Dispatcher
    timeouts: TimeoutChecker
    reconciler: Reconciler
    alerter: Alerter | None = None
    scrubber: Scrubber = field(default_factory=Scrubber)

    def start(self) -> None:
        """Start the background parts a long-running process needs (the replicator)."""
        self.tracker.start()

    def close(self, alert_drain_timeout: float = 10.0, write_drain_timeout: float = 30.0) -> None:
        """Let the record calls under way finish (bounded: a claim they made copied to
        the backup and announced) and the writes on the tracker's threads, deliver queued
        alerts (bounded), then close the transport and both stores."""
        if not self.orchestrator.quiesce(write_drain_timeout):
            log.warning(
                "closing with record calls still under way after %.0fs: a trigger one of "
                "them claimed may miss its copy on the backup (reconciliation copies it)",
                write_drain_timeout,
            )
        self.tracker.finish()
        if self.alerter is not None:
            self.alerter.close(alert_drain_timeout)
        self.transport.close()
        self.tracker.close()
        self.scrubber.remove_from_logs()

    # -- the library's own shells: what the CLI and the HTTP routes do ------------------

    @alerts_unexpected("runtime")
    def deliver(self, trigger_ids: Collection[str]) -> dict[str, Delivery]:
        """Deliver the pending triggers among ``trigger_ids`` now; each one's fate."""
        if not trigger_ids:
            return {}
        try:
            report = self.dispatcher.run_once(only=set(trigger_ids))
        except StoreError as exc:
            # What was recorded and claimed stays so: the triggers wait in the outbox.
            reason = f"reading the outbox failed: {exc}"
            return {tid: Delivery(tid, delivered=False, error=reason) for tid in trigger_ids}
        return {tid: Delivery.from_report(tid, report) for tid in trigger_ids}

    @alerts_unexpected("runtime")
    def record(
        self,
        phase: object,
        run_key: object,
        processor: object,
        *,
        status: object = "success",
        correlation_id: object = None,
        metadata: object = None,
        occurred_at: datetime | None = None,
        deliver: bool = True,
    ) -> Recorded:
        """Record one completion; deliver the trigger it claimed before returning.

        With ``deliver=False`` a claimed trigger is left to the dispatcher's loop (the
        service wakes it at once). Raises ValidationError and BothStoresFailed like
        ``Orchestrator.handle_completion``.
        """
        result = self.orchestrator.handle_completion(
            phase,
            run_key,
            processor,
            status=status,
            correlation_id=correlation_id,
            metadata=metadata,
            occurred_at=occurred_at,
        )
        if not (deliver and result.claimed and result.trigger_id):
            return Recorded(result)
        return Recorded(result, self.deliver([result.trigger_id])[result.trigger_id])

    @alerts_unexpected("runtime")
    async def arecord_report(
        self, body: object, *, default_correlation_id: str | None = None
    ) -> CompletionResult:
        """Record a report from an event loop (the service's path): its write is awaited
        on the stores' writers; the dispatcher delivers what it claimed."""
        completion = self.orchestrator.validate_report(
            body, default_correlation_id=default_correlation_id
        )
        [result] = await self.orchestrator.arecord([completion])
        return result

    @alerts_unexpected("runtime")
    async def arecord_reports(self, bodies: Sequence[object]) -> list[BatchItem]:
        """Record a batch of reports from an event loop, an answer per item."""
        return await self.orchestrator.arecord_completions(bodies)

    @alerts_unexpected("runtime")
    def record_report(
        self, body: object, *, default_correlation_id: str | None = None, deliver: bool = True
    ) -> Recorded:
        """:meth:`record` a report that arrived as a decoded JSON object (HTTP, Pub/Sub)."""
        report = parse_report(body, default_correlation_id=default_correlation_id)
        return self.record(
            report.phase,
            report.run_key,
            report.processor,
            status=report.status,
            correlation_id=report.correlation_id,
            metadata=report.metadata,
            deliver=deliver,
        )

    @alerts_unexpected("runtime")
    def record_reports(self, reports: Sequence[object], *, deliver: bool = True) -> RecordedBatch:
        """Record a batch of reports (decoded JSON objects), each checked on its own, as
        ``Orchestrator.record_completions`` does; deliver the triggers the batch claimed
        before returning (``deliver=False`` leaves them to a running dispatcher).

        Raises BothStoresFailed when neither store took the batch (nothing in it is then
        acknowledged)."""
        items = self.orchestrator.record_completions(reports)
        claimed = RecordedBatch(items, {}).claimed
        return RecordedBatch(items, self.deliver(claimed) if deliver else {})

    @alerts_unexpected("runtime")
    def trigger(
        self,
        phase: str,
        run_key: str,
        *,
        reason: TriggerReason = TriggerReason.MANUAL,
        deliver: bool = True,
    ) -> Triggered:
        """Trigger ``phase`` for ``run_key`` now (still at most once) and deliver it."""
        result = self.orchestrator.trigger(phase, run_key, reason=reason)
        if not (deliver and result.claimed):
            return Triggered(result)
        trigger_id = result.trigger.trigger_id
        return Triggered(result, self.deliver([trigger_id])[trigger_id])

    @alerts_unexpected("runtime")
    def maintain(
        self, runs: int = 50, *, deliver: bool = True, rolling_steps: int | None = 1
    ) -> MaintenancePass:
        """One sweep and one timeout pass over recent runs, and ``rolling_steps`` steps of
        the rolling sweep (``None``: a whole turn); deliver what they claimed.

        With ``deliver=False`` the dispatcher's loop is woken instead.
        """
        maintenance = run_maintenance(self.orchestrator, runs=runs, rolling_steps=rolling_steps)
        if maintenance.claimed:
            if deliver:
                self.dispatcher.run_once(only=maintenance.claimed)
            else:
                self.dispatcher.wake()
        return maintenance


def open_alerter(
    pipeline: Pipeline, *, clock: Clock = SYSTEM_CLOCK, scrubber: Scrubber | None = None
) -> Alerter | None:
    """The alerter for the sinks in ``[alerts]``, started, or ``None`` when none is configured.

    ``scrubber`` (the runtime's) learns the webhook URL and masks it in every alert.
    """
    settings = pipeline.alerts
    if not settings.enabled:
        return None
    sinks: list[AlertSink] = []
    repeat = settings.repeat_interval
    if settings.slack is not None:
        from phasegate.alerts.slack import SlackSink  # noqa: PLC0415 - slack_sdk on demand

        scrubber = scrubber or Scrubber()
        scrubber.add(settings.slack.webhook_url.reveal())
        sinks.append(
            SlackSink(
                settings.slack.webhook_url.reveal(),
                min_severity=Severity(settings.slack.min_severity),
                sleep=clock.sleep,
                scrubber=scrubber,
            )
        )
        repeat = settings.slack.repeat_interval
    if settings.log is not None:
        sinks.append(LogSink(Severity(settings.log.min_severity)))
    alerter = Alerter(
        sinks,
        clock=clock,
        repeat_interval=repeat.total_seconds(),
        queue_size=settings.queue_size,
    )
    alerter.start()
    return alerter


def open_runtime(
    pipeline: Pipeline,
    *,
    clock: Clock = SYSTEM_CLOCK,
    tuning: Tuning | None = None,
    transport: TriggerTransport | None = None,
    events: EventBus | None = None,
    rng: random.Random | None = None,
    stores: tuple[Store, Store] | None = None,
    scrubber: Scrubber | None = None,
) -> Runtime:
    """Open the stores and transport named in ``pipeline`` and wire every component.

    ``stores`` (primary, backup) replaces the stores the pipeline file names: a library
    user's own stores, or stores wrapped for a test. The runtime's ``scrubber`` (given,
    or a new one) learns the pipeline's secrets and masks them in phasegate's logs
    until :meth:`Runtime.close`.
    """
    tuning = tuning or tuning_from(pipeline)
    events = events or EventBus()
    scrubber = scrubber_for(pipeline, scrubber)
    alerter = open_alerter(pipeline, clock=clock, scrubber=scrubber)
    if alerter is not None:
        events.subscribe(alerter.handle_event)
    if stores is None:
        primary = open_store(pipeline.stores.primary, pipeline=pipeline.name, name="primary")
        backup = open_store(pipeline.stores.backup, pipeline=pipeline.name, name="backup")
    else:
        primary, backup = stores
    tracker = CompletionTracker(
        primary,
        backup,
        primary_policy=tuning.primary_policy,
        backup_policy=tuning.backup_policy,
        breaker_reset=tuning.breaker_reset,
        claim_policy=tuning.claim_policy,
        clock=clock,
        rng=rng,
        events=events,
    )

    announce = breaker_announcer(events, tuning.breaker_reset)
    tracker.primary_breaker.add_listener(announce)
    tracker.backup_breaker.add_listener(announce)
    transport = transport or open_transport(pipeline.triggers.transport)
    dispatcher = Dispatcher(
        tracker,
        transport,
        events=events,
        clock=clock,
        policy=tuning.delivery_policy,
        redelivery_base=tuning.redelivery_base,
        rng=rng,
    )
    orchestrator = Orchestrator(
        pipeline, tracker, events=events, clock=clock, on_claimed=lambda _t: dispatcher.wake()
    )

    def on_caught_up(role: StoreRole, _run_keys: frozenset[str]) -> None:
        # Claims deferred while the primary was out are made once it has caught up.
        if role is StoreRole.PRIMARY:
            orchestrator.retry_deferred()

    tracker.replicator.add_listener(on_caught_up)
    return Runtime(
        pipeline=pipeline,
        events=events,
        tracker=tracker,
        orchestrator=orchestrator,
        transport=transport,
        dispatcher=dispatcher,
        timeouts=TimeoutChecker(orchestrator),
        reconciler=Reconciler(primary, backup, events=events),
        alerter=alerter,
        scrubber=scrubber,
    )


def breaker_announcer(
    events: EventBus, reset_seconds: float
) -> Callable[[str, BreakerState, BreakerState], None]:
    """A breaker listener that raises ``breaker_opened`` and, on recovery, its resolution."""

    def on_breaker(name: str, old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.OPEN and old is BreakerState.CLOSED:
            events.emit(
                Event(
                    EventKind.BREAKER_OPENED,
                    Severity.WARNING,
                    name,
                    f"{name} circuit opened: writes fail; "
                    f"skipping it, next check in {reset_seconds:.0f}s",
                ),
                already_logged=True,
            )
        elif new is BreakerState.CLOSED:
            events.emit(
                Event(EventKind.BREAKER_CLOSED, Severity.RESOLVED, name, f"{name} recovered"),
                already_logged=True,
            )

    return on_breaker


def scrubber_for(pipeline: Pipeline, scrubber: Scrubber | None = None) -> Scrubber:
    """``scrubber`` (or a new one) knowing ``pipeline``'s secrets, applied to phasegate's logs."""
    scrubber = scrubber or Scrubber()
    for token in (pipeline.server.token, pipeline.server.read_token):
        if token is not None:
            scrubber.add(token.reveal())
    if pipeline.alerts.slack is not None:
        scrubber.add(pipeline.alerts.slack.webhook_url.reveal())
    scrubber.apply_to_logs()
    return scrubber
