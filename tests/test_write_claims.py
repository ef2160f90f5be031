"""Claims made in the write itself (``phasegate.write_claims``): on a SQLite primary
under the "defer" policy, the trigger a batch completes is claimed in the primary's
transaction of that batch, exactly as the usual path would claim it a moment later."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from phasegate.errors import TransientStoreError
from phasegate.events import EventKind
from phasegate.model import PhaseRun, trigger_id_for
from phasegate.stores.guarded import StoreRole
from phasegate.stores.sql.driver import DriverCursor
from phasegate.testing import FakeClock
from support import Harness, hold_writer

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


def _fill_the_disk(claims: Any) -> None:
    """A real SQLITE_FULL in the claims' savepoint: SQLite then rolls the whole
    transaction back (the batch's completions too), not only the savepoint."""
    dbapi = claims._connection.connection.dbapi_connection
    pages = dbapi.execute("PRAGMA page_count").fetchone()[0]
    dbapi.execute(f"PRAGMA max_page_count={pages + 2}")
    try:
        dbapi.execute(
            "INSERT INTO phasegate_runs (pipeline, run_key, first_seen_at) "
            "VALUES ('orders', ?, '2026')",
            ("x" * 200_000,),
        )
    finally:
        dbapi.execute("PRAGMA max_page_count=1073741823")


def _failing_once(harness: Harness, fail: Any) -> list[int]:
    """Make the next write's claims work call ``fail(claims)`` before claiming."""
    real = harness.orchestrator._claims_after
    failed: list[int] = []

    def claims_after(completions: Any) -> Any:
        then = real(completions)
        if then is None or failed:
            return then

        def failing(claims: Any, answers: Any) -> Any:
            failed.append(1)
            claims.triggers_of_runs([RUN])  # the savepoint taken, as the real work does
            fail(claims)
            return then(claims, answers)

        return failing

    harness.orchestrator._claims_after = claims_after  # type: ignore[method-assign]
    return failed


def test_a_transaction_the_database_rolled_back_fails_every_caller_of_the_batch(
    harness: Harness,
) -> None:
    """SQLite ends the whole transaction on a full disk, even inside the claims'
    savepoint. Its driver then commits nothing, silently: the writer must fail every
    request of the batch instead of answering one claimed and all of them written."""
    store = harness.tracker.primary
    other = "2026-01-29"
    harness.complete("extract", "api")
    harness.complete("extract", "api", run_key=other)
    last = [harness.orchestrator.validate("extract", RUN, "files")]
    theirs = [harness.orchestrator.validate("extract", other, "files")]
    claims_last = harness.orchestrator._claims_after(last)
    claims_theirs = harness.orchestrator._claims_after(theirs)
    assert claims_last is not None
    assert claims_theirs is not None

    def full(claims: Any, answers: Any) -> Any:
        claims.triggers_of_runs([other])
        _fill_the_disk(claims)
        return claims_theirs(claims, answers)

    hold = threading.Lock()
    hold.acquire()
    store.writer.submit_work(lambda _connection: hold.acquire(timeout=10))
    first = store.submit_completions(last, claims_last)  # claims first, in one transaction
    second = store.submit_completions(theirs, full)
    hold.release()
    for future in (first, second):
        with pytest.raises(TransientStoreError, match="transaction was lost"):
            future.result(10)
    assert store.triggers(RUN) == []
    assert {c.processor for c in store.completions(RUN)} == {"api"}
    assert {c.processor for c in store.completions(other)} == {"api"}


def test_a_report_whose_claims_lost_the_transaction_is_written_again_and_claimed_once(
    harness: Harness,
) -> None:
    """Through the orchestrator: the failed first attempt is retried (without claims in
    the write) and the usual path claims; the trigger is on both stores, announced once
    and delivered once."""
    failed = _failing_once(harness, _fill_the_disk)
    harness.complete("extract", "api")
    result = harness.complete("extract", "files")
    assert failed == [1]
    assert result.claimed
    assert {c.processor for c in harness.tracker.primary.completions(RUN)} == {"api", "files"}
    for role in (StoreRole.PRIMARY, StoreRole.BACKUP):
        assert [e.trigger.trigger_id for e in _outbox(harness, role)] == [result.trigger_id]
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1
    assert list(harness.runtime.dispatcher.run_once().delivered) == [result.trigger_id]


def test_a_driver_error_in_the_claims_is_the_stores_error_not_a_bug(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A statement the database refuses inside the claims work (the transaction stays):
    undone to its savepoint, answered as the store's error (a warning, no
    ``unexpected_error`` alert), and the usual path claims."""

    def refused(claims: Any) -> None:
        DriverCursor(claims._connection).execute("SELECT * FROM phasegate_no_such_table", ())

    failed = _failing_once(harness, refused)
    harness.complete("extract", "api")
    result = harness.complete("extract", "files")
    assert failed == [1]
    assert result.claimed
    assert harness.events_of(EventKind.UNEXPECTED_ERROR) == []
    assert "claims in the write failed" in caplog.text
    for role in (StoreRole.PRIMARY, StoreRole.BACKUP):
        assert len(_outbox(harness, role)) == 1
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1


def test_claims_whose_savepoint_cannot_be_released_are_undone(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Releasing the claims' savepoint fails: the claims are rolled back to it, not left
    in the batch's transaction to be committed unannounced; the usual path claims."""
    from phasegate.stores.sql import outbox

    releases: list[str] = []

    class FailingRelease(DriverCursor):
        def execute(self, sql: str, params: Any, *, many: bool = False) -> Any:
            if sql.startswith("RELEASE") and not releases:
                releases.append(sql)
                return super().execute("SELECT * FROM phasegate_no_such_table", ())
            return super().execute(sql, params, many=many)

    monkeypatch.setattr(outbox, "DriverCursor", FailingRelease)
    harness.complete("extract", "api")
    result = harness.complete("extract", "files")
    assert releases
    assert result.claimed
    for role in (StoreRole.PRIMARY, StoreRole.BACKUP):
        assert [e.trigger.trigger_id for e in _outbox(harness, role)] == [result.trigger_id]
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1


def test_a_caller_cancelled_after_the_claim_leaves_it_copied_and_announced(
    harness: Harness,
) -> None:
    """``arecord`` cancelled while the backup still writes (a shutdown's timeout, a
    caller's own): the primary has claimed in its write, so the sweep would never claim
    it again. The write is finished on a thread: the claim is copied to the backup and
    announced once, as if the caller had waited."""
    harness.complete("extract", "api")
    last = harness.orchestrator.validate("extract", RUN, "files")
    primary_done = threading.Event()
    release = hold_writer(harness.tracker.backup)

    async def cancelled() -> None:
        task = asyncio.ensure_future(harness.orchestrator.arecord([last]))
        while not harness.tracker.primary.triggers(RUN):  # claimed in the primary's write
            await asyncio.sleep(0.01)
        primary_done.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    assert primary_done.is_set()
    assert _outbox(harness, StoreRole.BACKUP) == []
    release.set()
    deadline = time.monotonic() + 10
    while not _outbox(harness, StoreRole.BACKUP) and time.monotonic() < deadline:
        time.sleep(0.01)
    trigger_id = trigger_id_for("orders", "extract", RUN)
    for role in (StoreRole.PRIMARY, StoreRole.BACKUP):
        assert [e.trigger.trigger_id for e in _outbox(harness, role)] == [trigger_id]
    while not harness.events_of(EventKind.TRIGGER_CLAIMED) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1
    assert {c.processor for c in harness.tracker.backup.completions(RUN)} == {"api", "files"}


def test_closing_while_a_report_is_written_waits_for_its_claim_to_reach_the_backup(
    harness: Harness,
) -> None:
    """``Runtime.close`` called while the completing report's writes are queued: the
    primary claims in its write, and the close waits for that report to copy the claim
    to the backup and announce it before the stores close (it closed the backup first,
    and the claim never reached it)."""
    harness.complete("extract", "api")
    holds = {"primary": threading.Event(), "backup": threading.Event()}
    for name, store in (("primary", harness.tracker.primary), ("backup", harness.tracker.backup)):
        release = holds[name]
        store.writer.submit_work(lambda _c, release=release: release.wait(10))
    answered: list[Any] = []
    reporter = threading.Thread(
        target=lambda: answered.append(harness.complete("extract", "files"))
    )
    reporter.start()
    closer = threading.Thread(target=harness.runtime.close)
    time.sleep(0.2)  # the report is queued behind the held writers
    closer.start()
    time.sleep(0.2)
    holds["primary"].set()
    time.sleep(0.2)
    holds["backup"].set()
    reporter.join(20)
    closer.join(20)
    assert not closer.is_alive()
    [result] = answered
    assert result.claimed
    for role in (StoreRole.PRIMARY, StoreRole.BACKUP):
        assert [e.trigger.trigger_id for e in _outbox(harness, role)] == [result.trigger_id]
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1
