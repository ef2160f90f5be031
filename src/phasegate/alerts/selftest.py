"""``phasegate alert test``: send one test alert through every configured sink, directly.

The alerter's queue is bypassed on purpose: the caller wants to know, per sink, whether
the alert went out (and why not), not that it was queued.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from phasegate.alerts.alerter import Alerter
from phasegate.alerts.base import Alert, AlertDeliveryError, AlertSink
from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.events import Severity
from phasegate.redact import SCRUBBER

if TYPE_CHECKING:
    from phasegate.config import Pipeline


@dataclass(frozen=True, slots=True)
class SinkResult:
    """Whether the test alert reached one sink."""

    sink: str
    target: str
    delivered: bool
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``phasegate alert test --format json``)."""
        return {
            "sink": self.sink,
            "target": self.target,
            "delivered": self.delivered,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


def build_test_alert(pipeline: str, clock: Clock = SYSTEM_CLOCK) -> Alert:
    """The alert ``phasegate alert test`` sends: plainly a test, naming pipeline and host."""
    return Alert(
        severity=Severity.INFO,
        component=f"{pipeline} alert test",
        title="test alert",
        message=(
            f"Test alert from phasegate for pipeline {pipeline} on {socket.gethostname()}: "
            "if you can read this, phasegate's alerts reach this channel."
        ),
        fingerprint=f"alert-test:{pipeline}",
        created_at=clock.now(),
        error_type="none (test)",
        hint="Sent by `phasegate alert test`; nothing is wrong.",
    )


def send_to_sinks(sinks: Sequence[AlertSink], alert: Alert) -> list[SinkResult]:
    """Send ``alert`` to each sink now, whatever its minimum severity; one result per sink."""
    results = []
    for sink in sinks:
        target = str(getattr(sink, "key", sink.name))
        started = time.perf_counter()
        try:
            sink.send(alert)
        except AlertDeliveryError as exc:
            error: str | None = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported per sink, never raised
            error = SCRUBBER.scrub(f"sink crashed: {type(exc).__name__}: {exc}")
        else:
            error = None
        results.append(
            SinkResult(sink.name, target, error is None, error, time.perf_counter() - started)
        )
    return results


def send_test_alert(source: Pipeline | Alerter, *, clock: Clock = SYSTEM_CLOCK) -> list[SinkResult]:
    """Send a test alert through every sink of ``source`` (a pipeline's ``[alerts]`` or an
    alerter); an empty list means no sink is configured."""
    if isinstance(source, Alerter):
        return send_to_sinks(source.sinks, build_test_alert("phasegate", clock))
    from phasegate.runtime import open_alerter  # noqa: PLC0415 - runtime imports alerts

    alerter = open_alerter(source, clock=clock)
    if alerter is None:
        return []
    try:
        return send_to_sinks(alerter.sinks, build_test_alert(source.name, clock))
    finally:
        alerter.close(0.0)
