"""Records the store tests write: completions, triggers and the moment they start."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from phasegate.model import Completion, Status, Trigger, TriggerReason, trigger_id_for

T0 = datetime(2026, 1, 28, 6, 0, tzinfo=UTC)
PIPELINE = "test-pipeline"
RUN = "2026-01-28"


def completion(
    processor: str = "bdl_boxscores",
    status: Status = Status.SUCCESS,
    *,
    at: datetime = T0,
    run_key: str = RUN,
    phase: str = "phase2",
    attempt: int = 1,
    metadata: dict[str, Any] | None = None,
) -> Completion:
    """A completion report with sensible defaults."""
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
    run_key: str = RUN, phase: str = "phase2", at: datetime = T0, attempt: int = 1
) -> Trigger:
    """The trigger of ``phase`` for ``run_key``, with its deterministic id."""
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
