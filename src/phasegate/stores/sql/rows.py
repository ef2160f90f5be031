"""phasegate's records as table rows and back."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from phasegate.errors import StoreError
from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseExecution,
    Status,
    TimeoutReport,
    Trigger,
    TriggerReason,
    frozen_metadata,
)
from phasegate.stores.sql.schema import UTCDateTime

TimeBinder = Callable[[datetime], Any]


def time_binder(dialect: sa.Dialect) -> TimeBinder:
    """Turns an aware datetime into what ``dialect``'s driver stores (as Core would)."""
    if dialect.name == "sqlite":
        return _sqlite_time
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    return process


_last_time: tuple[datetime | None, str] = (None, "")


def _sqlite_time(value: datetime) -> str:
    """SQLAlchemy's SQLite text form of a UTC time, without its per-value overhead; the
    last one converted is remembered (a batch's reports share their time)."""
    global _last_time  # noqa: PLW0603 - one tuple, replaced whole: safe across threads
    last = _last_time
    if last[0] is value:
        return last[1]
    if value.tzinfo is UTC:  # the usual case: the offset is all there is to drop
        text = value.isoformat(" ", "microseconds")[:-6]
        _last_time = (value, text)
        return text
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: phasegate stores UTC-aware times only")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def completion_row(pipeline: str, completion: Completion) -> dict[str, Any]:
    """The row of ``completion`` (times as datetimes, for Core)."""
    return {
        "pipeline": pipeline,
        "run_key": completion.run_key,
        "phase": completion.phase,
        "processor": completion.processor,
        "attempt": completion.attempt,
        "status": completion.status.value,
        "correlation_id": completion.correlation_id,
        "metadata": completion.metadata_json(),
        "occurred_at": completion.occurred_at,
    }


def driver_completion_row(
    pipeline: str, completion: Completion, bind: TimeBinder
) -> tuple[Any, ...]:
    """The row of ``completion`` ready for the driver, in ``COMPLETION_COLUMNS`` order; a
    value that cannot be stored is a StoreError now, before it reaches a batch."""
    try:
        return (
            pipeline,
            completion.run_key,
            completion.phase,
            completion.processor,
            completion.attempt,
            completion.status._value_,
            completion.correlation_id,
            completion.metadata_json() if completion.metadata else "{}",
            bind(completion.occurred_at),
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(f"completion {completion.key!r} cannot be stored: {exc}") from exc


TimeReader = Callable[[Any], datetime]


def time_reader(dialect: sa.Dialect) -> TimeReader:
    """Turns what ``dialect``'s driver returns for a stored time into an aware UTC
    datetime (as Core would)."""
    if dialect.name == "sqlite":
        return _sqlite_time_of
    process = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert process is not None

    def read(value: Any) -> datetime:
        time = process(value)
        assert isinstance(time, datetime), f"stored time {value!r} did not read as a datetime"
        return time

    return read


def _sqlite_time_of(value: str) -> datetime:
    """A time in SQLAlchemy's SQLite text form, without its per-value overhead."""
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


_STATUSES = {status.value: status for status in Status}
_EMPTY_METADATA = frozen_metadata(None)


def driver_to_completion(values: tuple[Any, ...], read_time: TimeReader) -> Completion:
    """A completion from a driver row in ``COMPLETION_COLUMNS`` order."""
    _, run_key, phase, processor, attempt, status, correlation_id, metadata, occurred_at = values
    return Completion(
        phase=phase,
        run_key=run_key,
        processor=processor,
        status=_STATUSES[status],
        occurred_at=read_time(occurred_at),
        correlation_id=correlation_id,
        metadata=_EMPTY_METADATA if metadata == "{}" else frozen_metadata(json.loads(metadata)),
        attempt=attempt,
    )


def to_completion(row: Any) -> Completion:
    """A completion from a completions or history row."""
    return Completion(
        phase=row.phase,
        run_key=row.run_key,
        processor=row.processor,
        status=Status(row.status),
        occurred_at=row.occurred_at,
        correlation_id=row.correlation_id,
        metadata=frozen_metadata(json.loads(row.metadata)),
        attempt=row.attempt,
    )


def trigger_row(pipeline: str, trigger: Trigger) -> dict[str, Any]:
    """The outbox row of a freshly claimed ``trigger``."""
    return {
        "pipeline": pipeline,
        "trigger_id": trigger.trigger_id,
        "run_key": trigger.run_key,
        "phase": trigger.phase,
        "attempt": trigger.attempt,
        "message": trigger.to_json(),
        "claimed_at": trigger.triggered_at,
        "delivered_at": None,
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
    }


def entry_row(pipeline: str, entry: OutboxEntry) -> dict[str, Any]:
    """The outbox row of a copied ``entry`` (a lease is never copied)."""
    row = trigger_row(pipeline, entry.trigger)
    row.update(
        claimed_at=entry.claimed_at,
        delivered_at=entry.delivered_at,
        attempts=entry.attempts,
        last_error=entry.last_error,
        next_attempt_at=entry.next_attempt_at,
    )
    return row


def driver_to_entry(values: tuple[Any, ...], read_time: TimeReader) -> OutboxEntry:
    """An outbox entry from a driver row in ``TRIGGER_COLUMNS`` order."""
    _, message, claimed_at, delivered_at, attempts, last_error, next_at, owner, expires = values
    return OutboxEntry(
        trigger=Trigger.from_message(json.loads(message)),
        claimed_at=read_time(claimed_at),
        delivered_at=None if delivered_at is None else read_time(delivered_at),
        attempts=attempts,
        last_error=last_error,
        next_attempt_at=None if next_at is None else read_time(next_at),
        lease_owner=owner,
        lease_expires_at=None if expires is None else read_time(expires),
    )


def to_entry(row: Any) -> OutboxEntry:
    """An outbox entry from its row."""
    return OutboxEntry(
        trigger=Trigger.from_message(json.loads(row.message)),
        claimed_at=row.claimed_at,
        delivered_at=row.delivered_at,
        attempts=row.attempts,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
    )


def execution_row(pipeline: str, execution: PhaseExecution) -> dict[str, Any]:
    """The row of ``execution``."""
    return {
        "pipeline": pipeline,
        "run_key": execution.run_key,
        "phase": execution.phase,
        "attempt": execution.attempt,
        "started_at": execution.started_at,
        "triggered_at": execution.triggered_at,
        "duration_seconds": execution.duration_seconds,
        "processors": json.dumps(list(execution.processors)),
        "reason": execution.reason.value,
        "trigger_id": execution.trigger_id,
    }


def to_execution(row: Any) -> PhaseExecution:
    """A phase execution from its row."""
    return PhaseExecution(
        phase=row.phase,
        run_key=row.run_key,
        started_at=row.started_at,
        triggered_at=row.triggered_at,
        processors=tuple(json.loads(row.processors)),
        reason=TriggerReason(row.reason),
        trigger_id=row.trigger_id,
        attempt=row.attempt,
    )


def timeout_row(pipeline: str, report: TimeoutReport) -> dict[str, Any]:
    """The row of ``report``."""
    return {
        "pipeline": pipeline,
        "run_key": report.run_key,
        "phase": report.phase,
        "attempt": report.attempt,
        "started_at": report.started_at,
        "reported_at": report.reported_at,
        "missing": json.dumps(list(report.missing)),
    }


def to_timeout(row: Any) -> TimeoutReport:
    """A timeout report from its row."""
    return TimeoutReport(
        phase=row.phase,
        run_key=row.run_key,
        started_at=row.started_at,
        reported_at=row.reported_at,
        missing=tuple(json.loads(row.missing)),
        attempt=row.attempt,
    )
