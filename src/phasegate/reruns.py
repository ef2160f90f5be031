"""Reruns: open attempt N+1 of a phase and of every phase downstream of it.

A rerun of phase P for run K claims a start signal (reason ``rerun``, ``ready_phases``
``[P]``, ``attempt`` N+1) under the id of the run's next rerun number (see
:func:`~phasegate.model.rerun_signal_id_for`). The earlier attempts' records stay in
history; reports that arrive afterwards count for the new attempt, and when P
completes again it triggers under the id of attempt N+1.

Which attempt a report counts for is decided when it is written, without reading the
outbox on every report: the orchestrator stamps each report with the attempt its
:class:`AttemptBook` knows (1 for a run it never saw rerun). Before a rerun claims
its signal it writes a marker completion (processor :data:`SUPERSEDED`) into the
current attempt of every phase it supersedes. The store answers each write with the
phase-run's successes, so a report stamped with a superseded attempt learns it from
its own write's answer; only then does the orchestrator read the run's triggers and
write the report again under the current attempt. Runs never rerun pay nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from phasegate.attempts import RunAttempts
from phasegate.errors import StoreError, ValidationError
from phasegate.model import (
    Completion,
    Status,
    Trigger,
    TriggerReason,
    frozen_metadata,
    rerun_signal_id_for,
)

if TYPE_CHECKING:
    from phasegate.orchestrator import Orchestrator, TriggerResult

OUTBOX_UPGRADE = (
    "reruns, backfills and ready signals need an outbox keyed by trigger id "
    "(the in-memory store; the SQL store from schema version 2)"
)

# Not a valid processor name, so it can never be a real processor's report.
SUPERSEDED = "@superseded"
MAX_RERUN_TRIES = 10


class AttemptBook:
    """The current attempt of each phase of recently seen runs: a bounded, thread-safe LRU.

    A run this process never saw is at attempt 1 everywhere. The book is a hint: a
    wrong entry is caught by the :data:`SUPERSEDED` marker of the attempt it names.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._runs: OrderedDict[str, dict[str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def attempt(self, run_key: str, phase: str) -> int:
        """The attempt of ``phase`` for ``run_key`` as far as this process knows."""
        with self._lock:
            known = self._runs.get(run_key)
            return known.get(phase, 1) if known else 1

    def learn(self, attempts: RunAttempts) -> None:
        """Remember what a read of the run's triggers told (only runs with reruns)."""
        with self._lock:
            if not attempts.has_reruns:
                self._runs.pop(attempts.run_key, None)
                return
            self._runs[attempts.run_key] = dict(attempts.current)
            self._runs.move_to_end(attempts.run_key)
            while len(self._runs) > self._size:
                self._runs.popitem(last=False)

    def stamp(self, completions: Sequence[Completion]) -> list[Completion]:
        """``completions`` with each attempt set to the one this book knows."""
        with self._lock:
            if not self._runs:  # no rerun seen lately: every report is at attempt 1
                return [c if c.attempt == 1 else replace(c, attempt=1) for c in completions]
            attempts = [
                known.get(c.phase, 1) if (known := self._runs.get(c.run_key)) else 1
                for c in completions
            ]
        return [
            c if c.attempt == attempt else replace(c, attempt=attempt)
            for c, attempt in zip(completions, attempts, strict=True)
        ]


def rerun(
    orchestrator: Orchestrator,
    phase: str,
    run_key: str,
    *,
    correlation_id: str | None = None,
) -> TriggerResult:
    """Start attempt N+1 of ``phase`` and of every phase downstream of it for ``run_key``.

    Asking again while that attempt has not triggered answers with the same start
    signal (``claimed`` false). Raises ValidationError for an unknown phase, a bad run
    key, or a run with no records at all (``backfill`` starts those).
    """
    from phasegate.orchestrator import TriggerResult  # noqa: PLC0415 - a cycle otherwise

    pipeline = orchestrator.pipeline
    pipeline.phase(phase)
    pipeline.validate_run_key(run_key)
    tracker = orchestrator.tracker
    for _ in range(MAX_RERUN_TRIES):
        entries = tracker.triggers(run_key)
        attempts = RunAttempts.from_triggers(pipeline.graph, run_key, entries)
        pending = attempts.pending_rerun(phase)
        if pending is not None:
            return TriggerResult(pending.trigger, claimed=False, deferred=False)
        if not entries and not tracker.completions(run_key):
            raise ValidationError(
                "run_key",
                f"nothing to rerun: {run_key!r} has no reports and no triggers; "
                "`phasegate backfill` starts a run",
                code="unknown_run",
            )
        now = orchestrator.clock.now()
        signal = Trigger.start_signal(
            pipeline.name,
            phase,
            run_key,
            attempts.attempt(phase) + 1,
            TriggerReason.RERUN,
            now,
            correlation_id,
            trigger_id=rerun_signal_id_for(pipeline.name, run_key, len(attempts.reruns) + 1),
        )
        superseded = [
            Completion(
                phase=name,
                run_key=run_key,
                processor=SUPERSEDED,
                status=Status.SUCCESS,
                occurred_at=now,
                correlation_id=correlation_id,
                metadata=frozen_metadata({"rerun": signal.trigger_id, "of": phase}),
                attempt=attempts.attempt(name),
            )
            for name in (phase, *pipeline.descendants(phase))
        ]
        # The markers go first: once the signal is claimed, every superseded attempt
        # already tells a stale writer to look again.
        tracker.record_completions(superseded)
        result = orchestrator.claim_start_signal(signal)
        if result.claimed or result.deferred:
            orchestrator.attempts(run_key)  # the book learns the new attempts
            return result
        if not orchestrator.held(signal):
            raise StoreError(
                f"rerun of {phase} for {run_key}: the store refused the start signal beside "
                f"the phase's own trigger; {OUTBOX_UPGRADE}"
            )
    raise StoreError(
        f"rerun of {phase} for {run_key}: lost the race for a rerun number "
        f"{MAX_RERUN_TRIES} times; too many concurrent reruns of one run"
    )
