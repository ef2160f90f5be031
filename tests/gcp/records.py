"""Records the Google Cloud store tests share: the store contract's completions and
triggers, with executions and timeout reports beside them."""

from __future__ import annotations

from datetime import datetime

from phasegate.model import PhaseExecution, TimeoutReport, TriggerReason, trigger_id_for
from store_records import PIPELINE, T0, completion, trigger

__all__ = ["PIPELINE", "T0", "completion", "execution", "timeout", "trigger"]


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
