"""Claims made in the write itself (``phasegate.write_claims``): on a SQLite primary
under the "defer" policy, the trigger a batch completes is claimed in the primary's
transaction of that batch, exactly as the usual path would claim it a moment later."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from phasegate.events import EventKind
from phasegate.model import PhaseRun, trigger_id_for
from phasegate.stores.guarded import StoreRole
from phasegate.testing import FakeClock
from support import Harness

RUN = "2026-01-28"


def _forbid(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[Any]:
    """Record calls of ``owner.name`` (the usual path's reads and claims)."""
    calls: list[Any] = []
    real = getattr(owner, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def _outbox(harness: Harness, role: StoreRole) -> list[Any]:
    store = harness.tracker.primary if role is StoreRole.PRIMARY else harness.tracker.backup
    entries: list[Any] = store.triggers(RUN)
    return entries


def test_the_completing_write_claims_its_trigger_in_its_own_transaction(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No read of the stores' triggers and no claim call of its own: the write claimed,
    and afterwards the trigger is on both stores with its execution, announced once and
    delivered once."""
    assert harness.tracker.claims_after_writes
    reads = _forbid(monkeypatch, harness.tracker, "triggers_of_runs")
    claims = _forbid(monkeypatch, harness.tracker, "claim_triggers")
    assert not harness.complete("extract", "api").phase_complete
    result = harness.complete("extract", "files")
    assert result.phase_complete
    assert result.claimed
    assert not result.deferred
    assert result.trigger_id == trigger_id_for("orders", "extract", RUN)
    assert reads == []
    assert claims == []
    for role in (StoreRole.PRIMARY, StoreRole.BACKUP):
        assert [e.trigger.trigger_id for e in _outbox(harness, role)] == [result.trigger_id]
    for store in (harness.tracker.primary, harness.tracker.backup):
        assert [e.trigger_id for e in store.phase_executions()] == [result.trigger_id]
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1
    assert list(harness.runtime.dispatcher.run_once().delivered) == [result.trigger_id]
    again = harness.complete("extract", "files")
    assert again.phase_complete
    assert not again.claimed
    assert again.trigger_id == result.trigger_id


def _usual(tmp_path: Path, clock: FakeClock) -> Harness:
    usual = Harness(tmp_path, clock)
    usual.tracker.claims_after_writes = False
    return usual


def test_a_claim_in_the_write_is_the_claim_the_usual_path_makes(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The same reports at the same times, claimed in the write and apart from it: the
    same answers, the same trigger messages and execution records on both stores."""
    reports = [
        {"phase": "extract", "run_key": key, "processor": name, "correlation_id": f"c-{key}"}
        for key in ("2026-01-10", "2026-01-11")
        for name in ("api", "files")
    ]
    outcomes = []
    for name, make in (("in", Harness), ("apart", _usual)):
        (tmp_path / name).mkdir()
        rig = make(tmp_path / name, clock)
        try:
            first = rig.orchestrator.record_completions(reports[:1])
            clock.advance(7.0)
            rest = rig.orchestrator.record_completions(reports[1:])
            answers = [item.to_dict() for item in (*first, *rest)]
            stored = [
                (
                    [
                        e.trigger.to_json()
                        for key in ("2026-01-10", "2026-01-11")
                        for e in s.triggers(key)
                    ],
                    sorted(s.phase_executions(), key=lambda e: e.run_key),
                )
                for s in (rig.tracker.primary, rig.tracker.backup)
            ]
            outcomes.append((answers, stored, len(rig.events_of(EventKind.TRIGGER_CLAIMED))))
        finally:
            rig.runtime.close()
        clock.advance(-7.0)
    assert outcomes[0] == outcomes[1]
    answers, stored, claimed = outcomes[0]
    # a run's claim is credited to its first report in the batch
    assert [a["claimed"] for a in answers] == [False, True, True, False]
    assert claimed == 2
    assert len(stored[0][0]) == 2


def test_a_failure_after_claiming_in_the_write_undoes_the_claim_and_claims_apart(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim made in the write is rolled back to its savepoint when the work fails
    after it (the completions stay written): the usual path then claims it, so the
    report is still answered claimed, once, and the bug is alerted."""
    real = harness.orchestrator._claim_in_write

    def claim_then_fail(*args: Any) -> Any:
        done = real(*args)
        if done.won:
            raise RuntimeError("bug after the claim")
        return done

    monkeypatch.setattr(harness.orchestrator, "_claim_in_write", claim_then_fail)
    harness.complete("extract", "api")
    result = harness.complete("extract", "files")
    assert result.claimed
    assert result.phase_complete
    for role in (StoreRole.PRIMARY, StoreRole.BACKUP):
        assert len(_outbox(harness, role)) == 1
    assert {c.processor for c in harness.tracker.primary.completions(RUN)} == {"api", "files"}
    unexpected = harness.events_of(EventKind.UNEXPECTED_ERROR)
    assert len(unexpected) == 1
    assert "bug after the claim" in unexpected[0].message
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1


def test_a_run_the_primary_misses_is_never_claimed_in_the_write(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the primary is known to miss records of the run, its own answer is not the
    whole story: the write claims nothing and the usual path defers the claim."""
    harness.complete("extract", "api")
    harness.tracker.replicator.note_missed(StoreRole.PRIMARY, (RUN,))
    monkeypatch.setattr(harness.tracker.replicator, "_loop", lambda: None, raising=False)
    result = harness.complete("extract", "files")
    assert result.phase_complete
    assert result.deferred
    assert not result.claimed
    assert _outbox(harness, StoreRole.PRIMARY) == []


def test_the_backup_policy_claims_apart_from_the_write(tmp_path: Path, clock: FakeClock) -> None:
    """Under claim_fallback = "backup" the backup may hold claims the primary lacks, so
    the primary's transaction cannot decide alone: no claims in the write."""
    text = (
        Path(__file__).with_name("support.py").read_text().split('PIPELINE_TEXT = """', 1)[1]
    ).split('"""', 1)[0]
    rig = Harness(tmp_path, clock, text='[resilience]\nclaim_fallback = "backup"\n' + text)
    try:
        assert not rig.tracker.claims_after_writes
        rig.complete("extract", "api")
        assert rig.complete("extract", "files").claimed
    finally:
        rig.runtime.close()


def test_the_event_loop_path_claims_in_the_write_too(harness: Harness) -> None:
    """``arecord`` (the HTTP service's path) takes the claim made in the write: answered
    claimed once the backup holds it too."""
    first = harness.orchestrator.validate("extract", RUN, "api")
    last = harness.orchestrator.validate("extract", RUN, "files")
    asyncio.run(harness.orchestrator.arecord([first]))
    [result] = asyncio.run(harness.orchestrator.arecord([last]))
    assert result.claimed
    assert result.trigger_id == trigger_id_for("orders", "extract", RUN)
    assert len(_outbox(harness, StoreRole.BACKUP)) == 1
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1


def test_a_rerun_is_claimed_in_the_write_at_its_new_attempt(harness: Harness) -> None:
    """After a rerun the write of the new attempt's last report claims the attempt-2
    trigger; the attempt-1 trigger stands as it was."""
    harness.complete("extract", "api")
    first = harness.complete("extract", "files")
    harness.orchestrator.rerun("extract", RUN)
    harness.complete("extract", "api")
    second = harness.complete("extract", "files")
    assert first.claimed
    assert second.claimed
    assert second.completion.attempt == 2
    assert second.trigger_id == trigger_id_for("orders", "extract", RUN, 2)
    run = PhaseRun("extract", RUN, 2)
    assert run == second.completion.phase_run
    ids = {e.trigger.trigger_id for e in _outbox(harness, StoreRole.PRIMARY)}
    assert {first.trigger_id, second.trigger_id} <= ids


def test_claims_undone_in_a_transaction_are_not_remembered_as_decided(
    harness: Harness,
) -> None:
    """Two requests completing one run share a transaction; the first one's claim work
    fails after claiming and is rolled back. The second must claim it, not answer it as
    already claimed by the first."""
    store = harness.tracker.primary
    harness.complete("extract", "api")
    last = [harness.orchestrator.validate("extract", RUN, "files")]
    real = harness.orchestrator._claims_after(last)
    assert real is not None

    def failing(claims: Any, answers: Any) -> Any:
        real(claims, answers)
        raise RuntimeError("bug after the claim")

    writer = store.writer
    hold = threading.Lock()
    hold.acquire()
    # The writer is kept busy so that both requests are queued into one transaction.
    writer.submit_work(lambda _connection: hold.acquire(timeout=10))
    first = store.submit_completions(last, failing)
    second = store.submit_completions(last, real)
    hold.release()
    first_followed = first.result(10).followed
    second_followed = second.result(10).followed
    assert isinstance(first_followed, RuntimeError)
    assert len(second_followed.won) == 1  # claimed by the second, not "already decided"
    assert len(store.triggers(RUN)) == 1
