"""Records the Google Cloud store tests share (the same shapes as the SQL contract's)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from phasegate.model import (
    Completion,
    PhaseExecution,
    Status,
    TimeoutReport,
    Trigger,
    TriggerReason,
    trigger_id_for,
)

T0 = datetime(2026, 1, 28, 6, 0, tzinfo=UTC)
PIPELINE = "test-pipeline"


def completion(
    processor: str = "bdl_boxscores",
    status: Status = Status.SUCCESS,
    *,
    at: datetime = T0,
    run_key: str = "2026-01-28",
    phase: str = "phase2",
    attempt: int = 1,
    metadata: dict[str, Any] | None = None,
) -> Completion:
    return Completion(
        phase=phase,
        run_key=run_key,
        processor=processor,
        status=status,
        occurred_at=at,
        correlation_id="corr-1",
        metadata=metadata or {"rows": 10},
        attempt=attempt,
    )


def trigger(
    run_key: str = "2026-01-28", phase: str = "phase2", at: datetime = T0, attempt: int = 1
) -> Trigger:
    return Trigger(
        trigger_id=trigger_id_for(PIPELINE, phase, run_key, attempt),
        pipeline=PIPELINE,
        phase=phase,
        next_phase="phase3",
        run_key=run_key,
        reason=TriggerReason.COMPLETE,
        triggered_at=at,
        correlation_id="corr-1",
        processors=("a", "b"),
        attempt=attempt,
    )


def execution(
    run_key: str = "2026-01-28", phase: str = "phase2", at: datetime = T0, attempt: int = 1
) -> PhaseExecution:
    return PhaseExecution(
        phase=phase,
        run_key=run_key,
        started_at=at,
        triggered_at=at.replace(hour=at.hour + 1),
        processors=("a", "b"),
        reason=TriggerReason.COMPLETE,
        trigger_id=trigger_id_for(PIPELINE, phase, run_key, attempt),
        attempt=attempt,
    )


def timeout(run_key: str = "2026-01-28", phase: str = "phase2", attempt: int = 1) -> TimeoutReport:
    return TimeoutReport(
        phase=phase,
        run_key=run_key,
        started_at=T0,
        reported_at=T0.replace(hour=9),
        missing=("b",),
        attempt=attempt,
    )
