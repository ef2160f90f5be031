"""Record-and-deliver: what the CLI and the HTTP routes do with a report, as a library.

:func:`parse_report` checks the shape of a report that arrived as a JSON object (an
object, no unknown field, the required ones present); the orchestrator checks every
value. :class:`Recorded` and :class:`Triggered` are what ``Runtime.record`` and
``Runtime.trigger`` answer: the orchestrator's result plus what became of the delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phasegate.dispatch import DispatchReport
from phasegate.orchestrator import BatchItem, CompletionResult, TriggerResult
from phasegate.reports import REPORT_FIELDS, REQUIRED_FIELDS, CompletionReport, parse_report

__all__ = [
    "REPORT_FIELDS",
    "REQUIRED_FIELDS",
    "CompletionReport",
    "Delivery",
    "Recorded",
    "RecordedBatch",
    "Triggered",
    "parse_report",
]


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of delivering one trigger right after it was claimed."""

    trigger_id: str
    delivered: bool
    error: str | None = None

    @classmethod
    def from_report(cls, trigger_id: str, report: DispatchReport) -> Delivery:
        """Read ``trigger_id``'s fate out of a dispatcher pass."""
        errors = dict(report.failed)
        delivered = trigger_id in report.delivered
        error = errors.get(trigger_id)
        if not delivered and error is None and report.unfinished is not None:
            error = f"the pass stopped before it: {report.unfinished}"
        return cls(trigger_id, delivered, error)

    def describe(self) -> str:
        """``delivered``, or ``pending`` with the reason and what to do."""
        if self.delivered:
            return "delivered"
        if self.error is None:
            return "pending"
        return f"pending ({self.error}); run `phasegate dispatch` to retry"


@dataclass(frozen=True, slots=True)
class Recorded:
    """A recorded completion and, when it claimed a trigger, that trigger's delivery."""

    result: CompletionResult
    delivery: Delivery | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result's fields plus ``delivery`` (``None`` when nothing was delivered)."""
        return self.result.to_dict() | {
            "delivery": self.delivery.describe() if self.delivery else None
        }


@dataclass(frozen=True, slots=True)
class RecordedBatch:
    """A batch of reports, an answer per report (in order), and the delivery of each
    trigger the batch claimed."""

    items: list[BatchItem]
    deliveries: dict[str, Delivery]

    @property
    def claimed(self) -> set[str]:
        """The ids of the triggers this batch claimed."""
        return {
            item.result.trigger_id
            for item in self.items
            if item.result is not None and item.result.claimed and item.result.trigger_id
        }


@dataclass(frozen=True, slots=True)
class Triggered:
    """A manual (or timeout) trigger and, when it was claimed now, its delivery."""

    result: TriggerResult
    delivery: Delivery | None = None

    def to_dict(self) -> dict[str, Any]:
        """``trigger_id``, ``claimed``, ``deferred``, ``reason`` and ``delivery``."""
        trigger = self.result.trigger
        return {
            "trigger_id": trigger.trigger_id,
            "claimed": self.result.claimed,
            "deferred": self.result.deferred,
            "reason": trigger.reason.value,
            "delivery": self.delivery.describe() if self.delivery else None,
        }
