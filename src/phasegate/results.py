"""What recording and triggering answer: per report, per batch item, per trigger."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from phasegate.errors import ValidationError
from phasegate.model import Completion, PhaseRun, Trigger
from phasegate.validation import json_type

if TYPE_CHECKING:
    from phasegate.tracker import DualWriteResult


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


def sort_reports(
    reports: Iterable[object], validate: Callable[[object], Completion]
) -> tuple[list[BatchItem | None], list[tuple[int, Completion]]]:
    """Validate each report of a batch on its own: a slot per report (an error item, or
    ``None`` for a valid one) and the valid completions with their indexes."""
    if reports is None or isinstance(reports, str | bytes | bytearray | Mapping):
        # Iterating these would "validate" their characters or keys one by one.
        raise ValidationError(
            "completions",
            f"expected a list of report objects, got {json_type(reports)}",
            code="wrong_type",
        )
    items: list[BatchItem | None] = []
    valid: list[tuple[int, Completion]] = []
    for index, report in enumerate(reports):
        try:
            if not isinstance(report, Mapping):
                raise ValidationError(
                    "item", f"expected a JSON object, got {json_type(report)}", code="wrong_type"
                )
            completion = validate(report)
        except ValidationError as exc:
            items.append(BatchItem(index, error=exc))
            continue
        items.append(None)
        valid.append((index, completion))
    return items, valid


def answer_completions(
    completions: Sequence[Completion],
    write: DualWriteResult,
    complete: set[PhaseRun],
    claimed: Mapping[PhaseRun, _Claimed],
) -> list[CompletionResult]:
    """A result per recorded completion; a phase-run's claim is credited to its first
    report in the batch."""
    results: list[CompletionResult] = []
    first_of: set[PhaseRun] = set()
    for completion in completions:
        run = completion.phase_run
        outcome = claimed.get(run)
        results.append(
            CompletionResult(
                completion=completion,
                primary_ok=write.primary_ok,
                backup_ok=write.backup_ok,
                phase_complete=run in complete,
                trigger_id=outcome.trigger_id if outcome else None,
                claimed=bool(outcome and outcome.claimed and run not in first_of),
                deferred=bool(outcome and outcome.deferred),
            )
        )
        first_of.add(run)
    return results


def answer_items(
    items: list[BatchItem | None],
    valid: list[tuple[int, Completion]],
    results: list[CompletionResult],
) -> list[BatchItem]:
    """Fill each valid report's slot with its result: the batch's answer, in order."""
    for (index, _), result in zip(valid, results, strict=True):
        items[index] = BatchItem(index, result=result)
    return [item for item in items if item is not None]


def heard(decided: _Claimed) -> _Claimed:
    """Another caller's decision, as a waiting caller answers it: not claimed by it."""
    return _Claimed(decided.trigger_id, claimed=False, deferred=decided.deferred)


class Decisions:
    """One decision per phase-run in this process at a time.

    Concurrent reports of one phase-run often all see it complete (their writes share a
    commit): the first caller decides it, the others wait for its answer — the same
    trigger id, not claimed by them — instead of reading and claiming again. The
    compare-and-set in the store still decides between processes and replicas.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[PhaseRun, Future[_Claimed]] = {}

    def decide(
        self,
        runs: Sequence[PhaseRun],
        decide: Callable[[list[PhaseRun]], dict[PhaseRun, _Claimed]],
    ) -> dict[PhaseRun, _Claimed]:
        """``decide`` the runs nobody here is deciding; wait for the others' answers."""
        mine, theirs = self.take(runs)
        answers = self.decide_taken(mine, decide) if mine else {}
        for run, pending in theirs.items():
            answers[run] = heard(pending.result())
        return answers

    def take(
        self, runs: Sequence[PhaseRun]
    ) -> tuple[list[PhaseRun], dict[PhaseRun, Future[_Claimed]]]:
        """Split ``runs``: those the caller now decides (it must :meth:`decide_taken`
        them), and the futures of those another caller is deciding."""
        mine: list[PhaseRun] = []
        theirs: dict[PhaseRun, Future[_Claimed]] = {}
        with self._lock:
            for run in runs:
                pending = self._pending.get(run)
                if pending is None:
                    # Running at once: a waiter cancelled (its task, through
                    # asyncio.wrap_future) cannot cancel the others' answer.
                    future: Future[_Claimed] = Future()
                    future.set_running_or_notify_cancel()
                    self._pending[run] = future
                    mine.append(run)
                else:
                    theirs[run] = pending
        return mine, theirs

    def decide_taken(
        self,
        mine: list[PhaseRun],
        decide: Callable[[list[PhaseRun]], dict[PhaseRun, _Claimed]],
    ) -> dict[PhaseRun, _Claimed]:
        """``decide`` the runs :meth:`take` gave the caller and answer whoever waits."""
        try:
            answers = decide(mine)
        except BaseException as exc:
            self._settle(mine, {}, exc)
            raise
        self._settle(mine, answers, None)
        return answers

    def _settle(
        self,
        runs: list[PhaseRun],
        answers: dict[PhaseRun, _Claimed],
        error: BaseException | None,
    ) -> None:
        with self._lock:
            futures = [self._pending.pop(run) for run in runs]
        for run, future in zip(runs, futures, strict=True):
            if error is None:
                future.set_result(answers[run])
            else:
                future.set_exception(error)
