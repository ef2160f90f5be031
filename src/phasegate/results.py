"""What recording and triggering answer: per report, per batch item, per trigger."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phasegate.errors import ValidationError
from phasegate.model import Completion, Trigger


@dataclass(frozen=True, slots=True)
class CompletionResult:
    """What ``handle_completion`` did with one report."""

    completion: Completion
    primary_ok: bool
    backup_ok: bool
    phase_complete: bool
    trigger_id: str | None
    claimed: bool
    deferred: bool = False

    @property
    def recorded(self) -> bool:
        """The completion is durable in at least one store (always true when returned)."""
        return self.primary_ok or self.backup_ok

    def to_dict(self) -> dict[str, Any]:
        """The answer the CLI (``--format json``) and ``POST /v1/completions`` give."""
        return {
            "recorded": self.recorded,
            "primary_ok": self.primary_ok,
            "backup_ok": self.backup_ok,
            "phase_complete": self.phase_complete,
            "trigger_id": self.trigger_id,
            "claimed": self.claimed,
            "deferred": self.deferred,
            "correlation_id": self.completion.correlation_id,
        }


@dataclass(frozen=True, slots=True)
class BatchItem:
    """The answer for one report of a batch: its result, or why it was rejected."""

    index: int
    result: CompletionResult | None = None
    error: ValidationError | None = None

    @property
    def ok(self) -> bool:
        """The report was recorded."""
        return self.result is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as ``POST /v1/completions:batch`` answers each item."""
        if self.result is not None:
            return {"index": self.index, "ok": True, **self.result.to_dict()}
        assert self.error is not None
        return {
            "index": self.index,
            "ok": False,
            "error": {
                "code": self.error.code,
                "field": self.error.field,
                "message": self.error.message,
            },
        }


@dataclass(frozen=True, slots=True)
class _Claimed:
    """What became of one complete phase-run of a batch."""

    trigger_id: str | None
    claimed: bool
    deferred: bool


@dataclass(frozen=True, slots=True)
class TriggerResult:
    """The outcome of an attempt to trigger a phase."""

    trigger: Trigger
    claimed: bool
    deferred: bool
