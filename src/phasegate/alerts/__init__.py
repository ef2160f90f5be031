"""Alerts: events become alerts; sinks (Slack, log) receive them off the hot path."""

from phasegate.alerts.alerter import Alerter
from phasegate.alerts.base import Alert, AlertDeliveryError, AlertSink, alert_from_event
from phasegate.alerts.log import LogSink
from phasegate.alerts.selftest import SinkResult, send_test_alert

__all__ = [
    "Alert",
    "AlertDeliveryError",
    "AlertSink",
    "Alerter",
    "LogSink",
    "SinkResult",
    "alert_from_event",
    "send_test_alert",
]
