"""A claim is decided from the stores' own answers to the write; a store that answers
only the successes has its phase-runs read back instead, with the same outcome."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from phasegate.config import loads_pipeline
from phasegate.events import EventKind
from phasegate.model import Completion, PhaseRun, TriggerReason, trigger_id_for
from phasegate.runtime import open_runtime
from phasegate.stores.memory import MemoryStore
from phasegate.testing import FakeClock
from support import PIPELINE_TEXT, Harness, RecordingTransport

RUN = "2026-01-28"


class CountingStore(MemoryStore):
    """A memory store that counts read-backs and may answer the successes alone."""

    def __init__(self, *, successes_only: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.successes_only = successes_only
        self.read_back: list[str] = []

    def record_completions(
        self, completions: Sequence[Completion]
    ) -> Mapping[PhaseRun, frozenset[str]]:
        answer = super().record_completions(completions)
        if self.successes_only:
            return {run: frozenset(names) for run, names in answer.items()}
        return answer

    def completions(self, run_key: str, phase: str | None = None) -> list[Completion]:
        self.read_back.append(run_key)
        return super().completions(run_key, phase)


@pytest.mark.parametrize(
    ("primary_plain", "backup_plain", "reads_back"),
    [(False, False, False), (False, True, True), (True, True, True)],
    ids=["both-answer-all", "backup-answers-successes", "both-answer-successes"],
)
def test_a_claim_is_decided_from_the_answers_or_read_back_alike(
    clock: FakeClock, primary_plain: bool, backup_plain: bool, reads_back: bool
) -> None:
    """The trigger and the execution record are the same whichever way the claim learnt
    the phase-run: started at its earliest standing report (a failure that a later
    success replaced no longer stands), triggered by the last."""
    pipeline = loads_pipeline(PIPELINE_TEXT)
    primary = CountingStore(successes_only=primary_plain, pipeline=pipeline.name, name="p")
    backup = CountingStore(successes_only=backup_plain, pipeline=pipeline.name, name="b")
    runtime = open_runtime(
        pipeline, clock=clock, transport=RecordingTransport(), stores=(primary, backup)
    )
    try:
        orchestrator = runtime.orchestrator
        started = clock.now()
        orchestrator.handle_completion("extract", RUN, "files", status="failed")
        clock.advance(120)
        assert not orchestrator.handle_completion("extract", RUN, "api").phase_complete
        clock.advance(480)
        primary.read_back.clear()
        backup.read_back.clear()
        last = orchestrator.handle_completion("extract", RUN, "files")
        assert (last.phase_complete, last.claimed) == (True, True)
    finally:
        runtime.close()
    for store in (primary, backup):
        [execution] = store.phase_executions()
        assert execution.started_at == started + timedelta(seconds=120)
        assert execution.duration_seconds == 480
        assert execution.processors == ("api", "files")
        [entry] = store.triggers(RUN)
        assert entry.trigger.trigger_id == last.trigger_id
        assert entry.trigger.reason is TriggerReason.COMPLETE
        assert entry.trigger.processors == ("api", "files")
        assert store.read_back == ([RUN] if reads_back else [])


def test_concurrent_requests_completing_one_run_claim_it_once(
    tmp_path: Any, clock: FakeClock
) -> None:
    """On the event-loop path, reports that see their phase-run complete in the same
    commit wait for the one deciding it: one claim, the same trigger id for all."""
    harness = Harness(tmp_path, clock)
    runtime = harness.runtime

    async def report(processor: str) -> Any:
        body = {"phase": "extract", "run_key": RUN, "processor": processor}
        return await runtime.arecord_report(body)

    async def together() -> list[Any]:
        return await asyncio.gather(*(report(p) for p in ["api", "files"] * 6))

    try:
        results = asyncio.run(together())
        assert all(r.phase_complete for r in results[-2:])
        assert sum(r.claimed for r in results) == 1
        assert {r.trigger_id for r in results if r.phase_complete} == {
            trigger_id_for("orders", "extract", RUN)
        }
        assert len(harness.tracker.triggers(RUN)) == 1
        assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1
    finally:
        runtime.close()


def test_a_cancelled_waiter_neither_fails_the_decider_nor_strands_other_waiters(
    harness: Harness,
) -> None:
    """Caller A decides two phase-runs; B waits for A's decision of the first, C for the
    second (event-loop callers). B is cancelled (a client gone): A's answers still reach
    A and C, and A does not fail for it."""
    orchestrator = harness.orchestrator
    harness.tracker.claims_after_writes = False  # claims decided after the write
    other = "2026-01-29"
    harness.complete("extract", "api", run_key=RUN)
    harness.complete("extract", "api", run_key=other)
    deciding, decide = threading.Event(), threading.Event()
    real_decide = orchestrator._decide

    def held_decide(*args: Any) -> Any:
        deciding.set()
        decide.wait(10)
        return real_decide(*args)

    waiting = [0]
    real_take = orchestrator._decisions.take

    def counted_take(runs: Any) -> Any:
        mine, theirs = real_take(runs)
        waiting[0] += len(theirs)
        return mine, theirs

    orchestrator._decide = held_decide  # type: ignore[method-assign]
    orchestrator._decisions.take = counted_take  # type: ignore[method-assign]

    def report(run_key: str) -> Completion:
        return orchestrator.validate("extract", run_key, "files")

    async def scenario() -> tuple[Any, Any]:
        a = asyncio.ensure_future(orchestrator.arecord([report(RUN), report(other)]))
        while not deciding.is_set():
            await asyncio.sleep(0.005)
        b = asyncio.ensure_future(orchestrator.arecord([report(RUN)]))
        c = asyncio.ensure_future(orchestrator.arecord([report(other)]))
        while waiting[0] < 2:
            await asyncio.sleep(0.005)
        b.cancel()
        await asyncio.sleep(0)
        decide.set()
        return await asyncio.wait_for(asyncio.gather(a, c), 10)

    decided, heard_it = asyncio.run(scenario())
    assert [r.claimed for r in decided] == [True, True]
    [answer] = heard_it
    assert (answer.claimed, answer.trigger_id) == (False, decided[1].trigger_id)
