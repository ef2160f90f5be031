"""Completion in, next phase out: validate, dual-write, evaluate, claim once, outbox."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from phasegate import reruns
from phasegate.attempts import RunAttempts
from phasegate.claiming import Claiming
from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.config import Pipeline
from phasegate.errors import BothStoresFailed
from phasegate.events import EventBus
from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseRun,
    Status,
    Trigger,
)
from phasegate.reports import CompletionReport, parse_report
from phasegate.results import (
    BatchItem,
    CompletionResult,
    Decisions,
    TriggerResult,
    _Claimed,
    answer_completions,
    answer_items,
    heard,
    sort_reports,
)
from phasegate.status import PhaseStatus, evaluate_phase
from phasegate.stores.base import ClaimsAfter
from phasegate.sweeping import Sweeping
from phasegate.tracker import BatchWriteResult, CompletionTracker
from phasegate.unexpected import alerts_unexpected
from phasegate.validation import (
    MAX_CORRELATION_ID_LENGTH,
    MAX_METADATA_BYTES,
    ReportChecker,
)
from phasegate.write_alerts import WriteAlerts
from phasegate.write_claims import WriteClaims, won_in_write

# PhaseStatus lives in status.py; importing it from here keeps working.
__all__ = [
    "MAX_CORRELATION_ID_LENGTH",
    "MAX_METADATA_BYTES",
    "BatchItem",
    "CompletionResult",
    "Orchestrator",
    "PhaseStatus",
    "TriggerResult",
]

log = logging.getLogger(__name__)


class Orchestrator(Claiming, Sweeping, WriteClaims, WriteAlerts):
    """Turns completions into exactly-once phase triggers for one pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        tracker: CompletionTracker,
        *,
        events: EventBus | None = None,
        clock: Clock | None = None,
        on_claimed: Callable[[Trigger], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.tracker = tracker
        self.events = events or EventBus()
        self.clock = clock or tracker.clock or SYSTEM_CLOCK
        self._on_claimed = on_claimed
        self._stores_down = False
        self._state_lock = threading.Lock()
        self._deferred: set[str] = set()
        self._deferring = False  # a claim_deferred alert is out and not resolved yet
        self._rolling_after: str | None = None  # where the rolling sweep goes on from
        self._decisions = Decisions()  # one decision per phase-run here at a time
        self._book = reruns.AttemptBook()
        self._in_flight = InFlight()  # record calls under way, for a close to wait on
        self._checker = ReportChecker(pipeline, self.clock)

    # -- validation ----------------------------------------------------------------------

    def validate(
        self,
        phase: object,
        run_key: object,
        processor: object,
        *,
        status: object = Status.SUCCESS.value,
        correlation_id: object = None,
        metadata: object = None,
        occurred_at: datetime | None = None,
    ) -> Completion:
        """Check a report and build its :class:`Completion`; a ValidationError names the field."""
        report = CompletionReport(phase, run_key, processor, status, correlation_id, metadata)
        return self._checker.check(report, occurred_at)

    # -- the main path -------------------------------------------------------------------

    @alerts_unexpected("orchestrator")
    def handle_completion(
        self,
        phase: object,
        run_key: object,
        processor: object,
        *,
        status: object = Status.SUCCESS.value,
        correlation_id: object = None,
        metadata: object = None,
        occurred_at: datetime | None = None,
    ) -> CompletionResult:
        """Validate and record one report; trigger the next phase if this completed its phase.

        Raises ValidationError for bad input and BothStoresFailed when nothing could be
        recorded (the report is then not acknowledged).
        """
        completion = self.validate(
            phase,
            run_key,
            processor,
            status=status,
            correlation_id=correlation_id,
            metadata=metadata,
            occurred_at=occurred_at,
        )
        return self.record([completion])[0]

    def validate_reports(
        self, reports: Iterable[object]
    ) -> tuple[list[BatchItem | None], list[tuple[int, Completion]]]:
        """Validate each report on its own (see :func:`~phasegate.results.sort_reports`);
        the reports of one batch arrived together, and are stamped with one time."""
        now = self.clock.now()
        check, parse = self._checker.check, parse_report
        return sort_reports(reports, lambda body: check(parse(body), now))

    def validate_report(
        self, body: object, *, default_correlation_id: str | None = None
    ) -> Completion:
        """Check a report that arrived as a decoded JSON object (its shape, then every
        value) and build its :class:`Completion`."""
        return self._checker.check(
            parse_report(body, default_correlation_id=default_correlation_id)
        )

    @alerts_unexpected("orchestrator")
    async def arecord_completions(self, reports: Iterable[object]) -> list[BatchItem]:
        """:meth:`record_completions` for an event loop (the HTTP service's path)."""
        items, valid = self.validate_reports(reports)
        results = await self.arecord([c for _, c in valid]) if valid else []
        return answer_items(items, valid, results)

    @alerts_unexpected("orchestrator")
    async def arecord(self, completions: Sequence[Completion]) -> list[CompletionResult]:
        """:meth:`record` for an event loop: the batch write is awaited without a thread;
        the claims of phase-runs it completed (a read and a compare-and-set) run in one."""
        token = self._in_flight.begin()
        try:
            return await self._arecord(completions)
        finally:
            self._in_flight.end(token)

    async def _arecord(self, completions: Sequence[Completion]) -> list[CompletionResult]:
        completions = self._book.stamp(completions)
        try:
            write = await self.tracker.arecord_completions(
                completions, self._claims_after(completions), self._written_unheard
            )
        except BothStoresFailed as exc:
            self._stores_failed(completions, exc)
            raise
        self._stores_ok(completions)
        claimed = (
            await asyncio.to_thread(self._claimed_in_write, write)
            if won_in_write(write)
            else self._claimed_in_write(write)
        )
        if _superseded(write):
            completions, write = await asyncio.to_thread(self._restamp, completions, write)
        complete = self._noted(completions, write)
        rest = sorted(complete - claimed.keys())
        if not rest:
            return answer_completions(completions, write, complete, claimed)
        # A phase-run another request here is deciding is awaited, not decided again:
        # concurrent reports of one run often see it complete in the same commit.
        mine, theirs = self._decisions.take(rest)
        if mine:
            answers = write.answers()
            claimed |= await asyncio.to_thread(
                self._decisions.decide_taken,
                mine,
                lambda runs: self._decide(runs, completions, answers),
            )
        for run, pending in theirs.items():
            claimed[run] = heard(await asyncio.wrap_future(pending))
        return answer_completions(completions, write, complete, claimed)

    def quiesce(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) for the record calls under way on other
        threads to end, so that what follows their writes (a claim's copy to the backup,
        its announcement) is done before the stores close; whether they all ended."""
        return self._in_flight.wait_under_way(timeout)

    @alerts_unexpected("orchestrator")
    def record_completions(self, reports: Iterable[object]) -> list[BatchItem]:
        """Validate each report on its own, record the valid ones as one batch, and trigger
        what they complete.

        A bad report is answered with its index and the field that is wrong; the good
        ones are recorded all the same. Raises BothStoresFailed when the batch could not
        be recorded at all (then nothing in it is acknowledged).
        """
        items, valid = self.validate_reports(reports)
        results = self.record([c for _, c in valid]) if valid else []
        return answer_items(items, valid, results)

    @alerts_unexpected("orchestrator")
    def record(self, completions: Sequence[Completion]) -> list[CompletionResult]:
        """Record validated completions as one dual-written batch, then claim the triggers
        of every phase-run the batch completed; one result per completion, in order.

        Each report is stamped with the attempt it counts for (see :mod:`reruns`)."""
        token = self._in_flight.begin()
        try:
            return self._record(completions)
        finally:
            self._in_flight.end(token)

    def _record(self, completions: Sequence[Completion]) -> list[CompletionResult]:
        completions = self._book.stamp(completions)
        write = self._write(completions, self._claims_after(completions))
        claimed = self._claimed_in_write(write)
        if _superseded(write):
            completions, write = self._restamp(completions, write)
        return self._settle(completions, write, claimed)

    def _write(
        self, completions: Sequence[Completion], then: ClaimsAfter | None = None
    ) -> BatchWriteResult:
        try:
            write = self.tracker.record_completions(completions, then)
        except BothStoresFailed as exc:
            self._stores_failed(completions, exc)
            raise
        self._stores_ok(completions)
        return write

    def _restamp(
        self, completions: list[Completion], write: BatchWriteResult
    ) -> tuple[list[Completion], BatchWriteResult]:
        """A rerun superseded phase-runs of this batch: learn the runs' current attempts and
        record those reports again under them; the answer merges both writes."""
        stale = {run for run, names in write.successes().items() if reruns.SUPERSEDED in names}
        for run_key in sorted({run.run_key for run in stale}):
            self.attempts(run_key)
        restamped = self._book.stamp(completions)
        moved = [c for c, before in zip(restamped, completions, strict=True) if c != before]
        if not moved:
            return completions, write
        again = self._write(moved)

        def merged(first: Any, second: Any) -> dict[PhaseRun, frozenset[str]]:
            kept = {run: names for run, names in (first or {}).items() if run not in stale}
            return {**kept, **(second or {})}

        return restamped, BatchWriteResult(
            again.primary_ok,
            again.backup_ok,
            again.primary_error,
            again.backup_error,
            merged(write.primary_value, again.primary_value),
            merged(write.backup_value, again.backup_value),
        )

    def _completed(self, successes: Mapping[PhaseRun, frozenset[str]]) -> set[PhaseRun]:
        return {
            run
            for run in successes
            if set(self.pipeline.phase(run.phase).processors) <= successes[run]
        }

    def _settle(
        self,
        completions: Sequence[Completion],
        write: BatchWriteResult,
        claimed: dict[PhaseRun, _Claimed],
    ) -> list[CompletionResult]:
        """After a batch is durable: report failures, claim what it completed that the
        write did not claim itself, answer."""
        complete = self._noted(completions, write)
        # Triggers are read only when they matter: most reports do not complete a phase.
        rest = sorted(complete - claimed.keys())
        if rest:
            claimed = claimed | self._trigger_completed(rest, completions, write)
        return answer_completions(completions, write, complete, claimed)

    def _noted(self, completions: Sequence[Completion], write: BatchWriteResult) -> set[PhaseRun]:
        """Report the batch's failures; the phase-runs it completed."""
        successes = write.successes()
        for completion in completions:
            if completion.status is Status.FAILED:
                self._report_failure(completion, successes.get(completion.phase_run, frozenset()))
        return self._completed(successes)

    def rerun(
        self, phase: str, run_key: str, *, correlation_id: str | None = None
    ) -> TriggerResult:
        """Start attempt N+1 of ``phase`` and every phase downstream for ``run_key``
        (see :mod:`phasegate.reruns`); the same rerun asked again answers the same signal."""
        return reruns.rerun(self, phase, run_key, correlation_id=correlation_id)

    # -- reading state -------------------------------------------------------------------

    def attempts(self, run_key: str, triggers: Sequence[OutboxEntry] | None = None) -> RunAttempts:
        """The attempts, triggers and start signals of ``run_key`` (read unless given)."""
        if triggers is None:
            triggers = self.tracker.triggers(run_key)
        attempts = RunAttempts.from_triggers(self.pipeline.graph, run_key, triggers)
        self._book.learn(attempts)
        return attempts

    def phase_status(
        self,
        phase: str,
        run_key: str,
        *,
        completions: Sequence[Completion] | None = None,
        triggers: Sequence[OutboxEntry] | None = None,
    ) -> PhaseStatus:
        """Evaluate one phase of one run, at its current attempt, from both stores."""
        return self._phase_state(phase, run_key, completions=completions, triggers=triggers)[0]

    def _phase_state(
        self,
        phase: str,
        run_key: str,
        *,
        completions: Sequence[Completion] | None = None,
        triggers: Sequence[OutboxEntry] | None = None,
    ) -> tuple[PhaseStatus, RunAttempts]:
        definition = self.pipeline.phase(phase)
        if completions is None:
            completions = self.tracker.completions(run_key, phase)
        attempts = self.attempts(run_key, triggers)
        status = evaluate_phase(definition, run_key, completions, attempts, self.clock.now())
        return status, attempts

    @alerts_unexpected("orchestrator")
    def run_status(self, run_key: str) -> list[PhaseStatus]:
        """Every phase of ``run_key``, in pipeline order, from one read of each kind."""
        return self._run_state(run_key)[0]

    def _run_state(self, run_key: str) -> tuple[list[PhaseStatus], RunAttempts]:
        self.pipeline.validate_run_key(run_key)
        completions = self.tracker.completions(run_key)
        attempts = self.attempts(run_key)
        now = self.clock.now()
        statuses = [
            evaluate_phase(p, run_key, completions, attempts, now) for p in self.pipeline.phases
        ]
        return statuses, attempts

    def list_runs(self, limit: int = 50) -> list[str]:
        """The most recent run keys, newest first."""
        return self.tracker.list_runs(limit)

    # -- overrides and sweeps ------------------------------------------------------------


def _superseded(write: BatchWriteResult) -> bool:
    """Whether a rerun marked any phase-run of this write as superseded (see reruns.py)."""
    return any(reruns.SUPERSEDED in names for names in write.successes().values())


class InFlight:
    """Calls under way (each between :meth:`begin` and :meth:`end`), and a wait for the
    ones begun so far on other threads."""

    def __init__(self) -> None:
        self._done = threading.Condition()
        self._calls: dict[int, int] = {}  # token -> the thread that began the call
        self._tokens = itertools.count()

    def begin(self) -> int:
        """A call begins; its token, for :meth:`end`."""
        token = next(self._tokens)
        with self._done:
            self._calls[token] = threading.get_ident()
        return token

    def end(self, token: int) -> None:
        """The call of ``token`` is over."""
        with self._done:
            del self._calls[token]
            self._done.notify_all()

    def wait_under_way(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) for the calls under way now to end; whether
        they all did. Calls begun later are not waited for (under steady traffic there is
        always one), nor those of this thread (a close from a listener inside a call, or
        on the event loop that runs an ``arecord``: they cannot end while it waits)."""
        me = threading.get_ident()
        with self._done:
            waited = {token for token, thread in self._calls.items() if thread != me}
            return self._done.wait_for(lambda: waited.isdisjoint(self._calls), timeout)
