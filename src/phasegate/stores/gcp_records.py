"""Phasegate's records as Google Cloud documents and rows: one field layout for both stores.

Firestore stores these dicts as documents; BigQuery appends them as rows (times as
RFC 3339 strings). Times are UTC-aware; metadata and trigger messages are compact JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseExecution,
    PhaseRun,
    Status,
    TimeoutReport,
    Trigger,
    TriggerReason,
    frozen_metadata,
)

T = TypeVar("T")
_MAX_ID_BYTES = 500
Doc = dict[str, Any]


def doc_id(*parts: object) -> str:
    """A safe Firestore document id for ``parts`` (see the module docstring)."""
    encoded = "|".join(
        quote(str(part), safe="").replace("_", "%5F").replace(".", "%2E") for part in parts
    )
    if len(encoded.encode()) > _MAX_ID_BYTES:
        return "h" + hashlib.sha256(encoded.encode()).hexdigest()
    return encoded


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is refused (phasegate stores aware times only)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: phasegate stores UTC-aware times only")
    return value.astimezone(UTC)


def as_time(value: Any) -> datetime:
    """A plain UTC datetime from what a client returns (a Firestore DatetimeWithNanoseconds,
    a BigQuery datetime, or RFC 3339 text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    moment: datetime = value.astimezone(UTC)
    return datetime(
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
        tzinfo=UTC,
    )


def maybe_time(value: Any) -> datetime | None:
    """:func:`as_time`, passing ``None`` through."""
    return None if value is None else as_time(value)


def completion_doc(completion: Completion) -> Doc:
    """The fields of a completion document (also a history entry)."""
    return {
        "phase": completion.phase,
        "run_key": completion.run_key,
        "processor": completion.processor,
        "attempt": completion.attempt,
        "status": completion.status.value,
        "occurred_at": utc(completion.occurred_at),
        "correlation_id": completion.correlation_id,
        "metadata": completion.metadata_json(),
    }


def to_completion(doc: Mapping[str, Any]) -> Completion:
    """Rebuild a completion from its document."""
    return Completion(
        phase=doc["phase"],
        run_key=doc["run_key"],
        processor=doc["processor"],
        status=Status(doc["status"]),
        occurred_at=as_time(doc["occurred_at"]),
        correlation_id=doc.get("correlation_id"),
        metadata=frozen_metadata(json.loads(doc.get("metadata") or "{}")),
        attempt=int(doc.get("attempt", 1)),
    )


def entry_doc(entry: OutboxEntry) -> Doc:
    """The fields of an outbox document."""
    trigger = entry.trigger
    return {
        "trigger_id": trigger.trigger_id,
        "run_key": trigger.run_key,
        "phase": trigger.phase,
        "attempt": trigger.attempt,
        "message": trigger.to_json(),
        "claimed_at": utc(entry.claimed_at),
        "delivered": entry.delivered,
        "delivered_at": entry.delivered_at and utc(entry.delivered_at),
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "next_attempt_at": entry.next_attempt_at and utc(entry.next_attempt_at),
        "lease_owner": entry.lease_owner,
        "lease_expires_at": entry.lease_expires_at and utc(entry.lease_expires_at),
    }


def to_entry(doc: Mapping[str, Any]) -> OutboxEntry:
    """Rebuild an outbox entry from its document."""
    return OutboxEntry(
        trigger=Trigger.from_message(json.loads(doc["message"])),
        claimed_at=as_time(doc["claimed_at"]),
        delivered_at=maybe_time(doc.get("delivered_at")),
        attempts=int(doc.get("attempts", 0)),
        last_error=doc.get("last_error"),
        next_attempt_at=maybe_time(doc.get("next_attempt_at")),
        lease_owner=doc.get("lease_owner"),
        lease_expires_at=maybe_time(doc.get("lease_expires_at")),
    )


def execution_doc(execution: PhaseExecution) -> Doc:
    """The fields of a phase-execution document."""
    return {
        "phase": execution.phase,
        "run_key": execution.run_key,
        "attempt": execution.attempt,
        "started_at": utc(execution.started_at),
        "triggered_at": utc(execution.triggered_at),
        "duration_seconds": execution.duration_seconds,
        "processors": list(execution.processors),
        "reason": execution.reason.value,
        "trigger_id": execution.trigger_id,
    }


def to_execution(doc: Mapping[str, Any]) -> PhaseExecution:
    """Rebuild a phase execution from its document."""
    return PhaseExecution(
        phase=doc["phase"],
        run_key=doc["run_key"],
        started_at=as_time(doc["started_at"]),
        triggered_at=as_time(doc["triggered_at"]),
        processors=tuple(doc.get("processors") or ()),
        reason=TriggerReason(doc["reason"]),
        trigger_id=doc["trigger_id"],
        attempt=int(doc.get("attempt", 1)),
    )


def timeout_doc(report: TimeoutReport) -> Doc:
    """The fields of a timeout document."""
    return {
        "phase": report.phase,
        "run_key": report.run_key,
        "attempt": report.attempt,
        "started_at": utc(report.started_at),
        "reported_at": utc(report.reported_at),
        "missing": list(report.missing),
    }


def to_timeout(doc: Mapping[str, Any]) -> TimeoutReport:
    """Rebuild a timeout report from its document."""
    return TimeoutReport(
        phase=doc["phase"],
        run_key=doc["run_key"],
        started_at=as_time(doc["started_at"]),
        reported_at=as_time(doc["reported_at"]),
        missing=tuple(doc.get("missing") or ()),
        attempt=int(doc.get("attempt", 1)),
    )


def history_id(completion: Completion) -> str:
    """The id of a completion's history entry: its identity, status and time."""
    return doc_id(*completion.key, completion.status.value, utc(completion.occurred_at).isoformat())


def phase_run_id(run: PhaseRun) -> str:
    """The id of a phase-run's document."""
    return doc_id(run.phase, run.run_key, run.attempt)


def chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
