"""Alerts: events become alerts; sinks (Slack, log) receive them off the hot path."""

from phasegate.alerts.alerter import Alerter
from phasegate.alerts.base import Alert, AlertDeliveryError, AlertSink, alert_from_event
from phasegate.alerts.log import LogSink

__all__ = ["Alert", "AlertDeliveryError", "AlertSink", "Alerter", "LogSink", "alert_from_event"]
