"""Alert delivery that can never hurt the orchestrator.

Callers only enqueue (never block, never see a sink's errors). A background thread
(:meth:`Alerter.start` / :meth:`Alerter.stop`) drains the bounded queue: at most one
message per second per sink, repeats of the same fingerprint within ``repeat_interval``
folded into one message with a count, one ``resolved`` message when a condition clears.
Overflow is counted and logged.

A sink that fails is logged CRITICAL once per failure streak (then WARNING per alert it
misses) and once more, at INFO, when it delivers again; every failed send is counted
(``counts["failed"]``, exported as ``phasegate_alerts_total{outcome="failed"}``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from phasegate.alerts.base import (
    SEVERITY_RANK,
    Alert,
    AlertDeliveryError,
    AlertSink,
    alert_from_event,
    resolved_fingerprints,
)
from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.events import Event, Severity
from phasegate.redact import SCRUBBER

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Seen:
    sent_at: float
    folded: int
    alert: Alert


class Alerter:
    """Turns events into alerts and hands them to sinks in the background."""

    def __init__(
        self,
        sinks: Sequence[AlertSink],
        *,
        clock: Clock = SYSTEM_CLOCK,
        repeat_interval: float = 3600.0,
        min_interval: float = 1.0,
        queue_size: int = 1000,
    ) -> None:
        self.sinks = list(sinks)
        self.clock = clock
        self.repeat_interval = repeat_interval
        self.min_interval = min_interval
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        self._last_sent: dict[str, float] = {}
        self._failing: dict[str, int] = {}  # sink name -> alerts failed in a row
        self.counts: Counter[str] = Counter()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the delivery thread; until then alerts only queue up."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="phasegate-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (at most ``timeout`` real seconds), then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        if not self.drain(timeout):
            log.error("closing with %d alert(s) undelivered after %.0fs", self._in_flight, timeout)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        else:
            thread.join(1.0)

    # -- the caller's side: never blocks ---------------------------------------------------

    def handle_event(self, event: Event) -> None:
        """An :class:`EventBus` listener: alert on warnings and worse, resolve what cleared."""
        for fingerprint in resolved_fingerprints(event):
            self.resolve(fingerprint, event)
        if event.severity in {Severity.WARNING, Severity.CRITICAL}:
            self.notify(alert_from_event(event, self.clock.now()))

    def notify(self, alert: Alert) -> bool:
        """Queue ``alert`` unless it repeats one sent within the interval; never blocks."""
        now = self.clock.monotonic()
        with self._lock:
            seen = self._seen.get(alert.fingerprint)
            if seen is not None and now - seen.sent_at < self.repeat_interval:
                seen.folded += 1
                self.counts["folded"] += 1
                return False
            count = 1 + (seen.folded if seen is not None else 0)
            self._seen[alert.fingerprint] = _Seen(sent_at=now, folded=0, alert=alert)
        return self._enqueue(alert.with_count(count))

    def resolve(self, fingerprint: str, event: Event | None = None) -> bool:
        """Send one ``resolved`` message if an alert with ``fingerprint`` is active."""
        with self._lock:
            seen = self._seen.pop(fingerprint, None)
        if seen is None:
            return False
        message = event.message if event is not None else "the condition has cleared"
        resolved = replace(
            seen.alert,
            severity=Severity.RESOLVED,
            title=f"resolved: {seen.alert.title}",
            message=f"{message} (was: {seen.alert.message})",
            stack_trace=None,
            hint=None,
            created_at=self.clock.now(),
            count=1 + seen.folded,
        )
        return self._enqueue(resolved)

    def _enqueue(self, alert: Alert) -> bool:
        with self._lock:
            self._in_flight += 1
        try:
            try:
                self._queue.put_nowait(alert)
            except queue.Full:
                # A critical alert is never the one dropped while a lesser one waits.
                if alert.severity is not Severity.CRITICAL or not self._evict_lesser():
                    raise
                self._queue.put_nowait(alert)
        except queue.Full:
            with self._lock:
                self._in_flight -= 1
            self.counts["dropped"] += 1
            log.error(
                "alert queue full (%d): dropped %s alert %r; sinks are not keeping up",
                self._queue.maxsize,
                alert.severity.value,
                alert.title,
            )
            return False
        self.counts["queued"] += 1
        return True

    def _evict_lesser(self) -> bool:
        """Drop the oldest queued alert that is not critical, to make room; ``False`` if
        every queued alert is critical."""
        with self._queue.mutex:
            for index, queued in enumerate(self._queue.queue):
                if queued is not None and queued.severity is not Severity.CRITICAL:
                    del self._queue.queue[index]
                    break
            else:
                return False
            self._queue.not_full.notify()
        with self._lock:
            self._in_flight -= 1
        self.counts["dropped"] += 1
        log.error(
            "alert queue full (%d): dropped a queued %s alert %r to keep a critical one",
            self._queue.maxsize,
            queued.severity.value,
            queued.title,
        )
        return True

    # -- the background side ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            try:
                for sink in self.sinks:
                    if SEVERITY_RANK[alert.severity] >= SEVERITY_RANK[sink.min_severity]:
                        self._send(sink, alert)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._idle.notify_all()

    def _send(self, sink: AlertSink, alert: Alert) -> None:
        key = getattr(sink, "key", sink.name)
        last = self._last_sent.get(key)
        if last is not None:
            wait = last + self.min_interval - self.clock.monotonic()
            if wait > 0:
                self.clock.sleep(wait)
        try:
            sink.send(alert)
        except Exception as exc:  # noqa: BLE001 - a sink's failure must never reach the caller
            self.counts["failed"] += 1
            self._sink_failed(sink, alert, exc)
        else:
            self.counts["sent"] += 1
            self._sink_delivered(sink)
        finally:
            self._last_sent[key] = self.clock.monotonic()

    def _sink_failed(self, sink: AlertSink, alert: Alert, exc: Exception) -> None:
        with self._lock:
            streak = self._failing.get(sink.name, 0) + 1
            self._failing[sink.name] = streak
        if isinstance(exc, AlertDeliveryError):
            reason, trace = str(exc), None
        else:
            reason, trace = SCRUBBER.scrub(f"sink crashed: {type(exc).__name__}: {exc}"), exc
        if streak == 1:
            log.critical(
                "alert not delivered to %s: %s; alert sink %s is failing: alerts are not "
                "reaching it (each alert's event is still in the log)",
                sink.name,
                reason,
                sink.name,
                exc_info=trace,
            )
        else:
            log.warning(
                "alert %r not delivered to %s (%d in a row): %s",
                alert.title,
                sink.name,
                streak,
                reason,
            )

    def _sink_delivered(self, sink: AlertSink) -> None:
        with self._lock:
            streak = self._failing.pop(sink.name, 0)
        if streak:
            log.info("alert sink %s delivers again, after %d failed alert(s)", sink.name, streak)

    def failing_sinks(self) -> dict[str, int]:
        """Sinks whose last send failed, with how many sends failed in a row."""
        with self._lock:
            return dict(self._failing)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait (at most ``timeout`` real seconds) until every queued alert is handled."""
        with self._lock:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """:meth:`stop` (draining within ``timeout``), then close the sinks."""
        self.stop(timeout)
        for sink in self.sinks:
            sink.close()
