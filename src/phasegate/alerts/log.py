"""The ``log`` sink: alerts as log records on the ``phasegate.alerts`` logger."""

from __future__ import annotations

import logging

from phasegate.alerts.base import Alert
from phasegate.events import Severity

log = logging.getLogger("phasegate.alerts")
_LEVELS = {
    Severity.CRITICAL: logging.CRITICAL,
    Severity.WARNING: logging.WARNING,
    Severity.INFO: logging.INFO,
    Severity.RESOLVED: logging.INFO,
}


class LogSink:
    """Writes each alert as one log line (for setups without Slack, and for tests)."""

    name = "log"

    def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
        self.min_severity = min_severity
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        """Log ``alert`` at its severity."""
        self.sent.append(alert)
        repeated = f" (x{alert.count})" if alert.count > 1 else ""
        log.log(
            _LEVELS[alert.severity],
            "ALERT %s [%s] %s%s: %s",
            alert.severity.value,
            alert.component,
            alert.title,
            repeated,
            alert.message,
        )

    def close(self) -> None:
        """Nothing to release."""
