"""The orchestrator: a completion in, the next phase out, exactly once (SPEC §2, 1–3)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from phasegate.errors import BothStoresFailed, ValidationError
from phasegate.events import EventKind, Severity
from phasegate.model import PhaseState, Status, TriggerReason, trigger_id_for
from support import Harness


@pytest.fixture(params=["sqlite", "memory"])
def harness_backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on SQLite and on the in-memory store."""
    return str(request.param)


RUN = "2026-01-28"


def test_the_last_processor_triggers_the_next_phase_once(harness: Harness) -> None:
    """Reports before the last say incomplete; the last claims; a duplicate does not."""
    first = harness.complete("extract", "api")
    assert (first.phase_complete, first.trigger_id, first.claimed) == (False, None, False)
    last = harness.complete("extract", "files")
    expected_id = trigger_id_for("orders", "extract", RUN)
    assert (last.phase_complete, last.trigger_id, last.claimed) == (True, expected_id, True)
    assert (last.primary_ok, last.backup_ok) == (True, True)
    again = harness.complete("extract", "files")
    assert (again.phase_complete, again.trigger_id, again.claimed) == (True, expected_id, False)
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1


def test_concurrent_last_reports_claim_exactly_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty threads all reporting the final processor at once: one claim, stored once in
    each store, announced once and delivered once. (On SQLite their writes share batches
    and claim in the write itself: each batch's transaction sees the run complete.)"""
    claims: list[Any] = []
    real_claim = harness.tracker.claim_triggers
    monkeypatch.setattr(
        harness.tracker, "claim_triggers", lambda *a: claims.append(a) or real_claim(*a)
    )
    harness.complete("extract", "api")
    barrier = threading.Barrier(20)
    results: list[Any] = []

    def report() -> None:
        barrier.wait()
        results.append(harness.complete("extract", "files"))

    threads = [threading.Thread(target=report) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.claimed for r in results) == 1
    assert {r.trigger_id for r in results} == {trigger_id_for("orders", "extract", RUN)}
    for store in (harness.tracker.primary, harness.tracker.backup):
        assert len(store.triggers(RUN)) == 1
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1
    assert len(harness.runtime.dispatcher.run_once().delivered) == 1
    if harness.tracker.claims_after_writes:
        assert claims == []
    assert len(harness.tracker.triggers(RUN)) == 1


def test_the_trigger_message_has_exactly_the_documented_keys(harness: Harness) -> None:
    """The message carries the deterministic id, the succeeded processors and the correlation id."""
    harness.complete("extract", "api", correlation_id="corr-a")
    harness.complete("extract", "files", correlation_id="corr-b")
    [entry] = harness.tracker.pending_triggers(harness.clock.now())
    message = entry.trigger.to_message()
    assert set(message) == {
        "trigger_id",
        "pipeline",
        "phase",
        "next_phase",
        "next_phases",
        "ready_phases",
        "run_key",
        "reason",
        "correlation_id",
        "processors",
        "missing",
        "triggered_at",
        "attempt",
    }
    assert message["trigger_id"] == trigger_id_for("orders", "extract", RUN)
    assert (message["phase"], message["next_phase"], message["reason"]) == (
        "extract",
        "transform",
        "complete",
    )
    assert message["processors"] == ["api", "files"]
    assert message["missing"] == []
    assert message["correlation_id"] == "corr-b"
    assert message["triggered_at"].endswith("Z")


def test_a_failure_then_a_success_completes_and_a_late_failure_changes_nothing(
    harness: Harness,
) -> None:
    """Failed blocks completion; success after it completes; a late failure is only history."""
    harness.complete("extract", "api")
    harness.complete("extract", "files", status="failed")
    assert harness.orchestrator.phase_status("extract", RUN).failed == ("files",)
    [warning] = harness.events_of(EventKind.PROCESSOR_FAILED)
    assert warning.severity is Severity.WARNING
    assert "files" in warning.message
    harness.clock.advance(5)
    assert harness.complete("extract", "files").claimed
    harness.clock.advance(5)
    late = harness.complete("extract", "files", status="failed")
    assert late.phase_complete
    assert len(harness.events_of(EventKind.PROCESSOR_FAILED)) == 1
    statuses = [c.status for c in harness.tracker.history(RUN) if c.processor == "files"]
    assert statuses == [Status.FAILED, Status.SUCCESS, Status.FAILED]


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"phase": "nope"}, "phase", "expected one of: extract, transform, load"),
        ({"processor": "ghost"}, "processor", "expected one of: api, files"),
        ({"run_key": "28/01/2026"}, "run_key", "does not match"),
        ({"status": "done"}, "status", "expected one of: success, failed"),
        ({"phase": 7}, "phase", "expected a string, got number"),
        ({"processor": None}, "processor", "expected a string, got null"),
        ({"metadata": [1, 2]}, "metadata", "expected a JSON object, got array"),
        ({"metadata": {"blob": "x" * 17000}}, "metadata", "at most 16384 allowed"),
        ({"metadata": {"n": float("nan")}}, "metadata", "not JSON-serialisable"),
        ({"correlation_id": "c" * 300}, "correlation_id", "longer than 256"),
    ],
)
def test_bad_input_is_rejected_naming_the_field_and_nothing_is_stored(
    harness: Harness, kwargs: dict[str, Any], field: str, fragment: str
) -> None:
    """Each kind of bad report raises ValidationError(field) and leaves the stores untouched."""
    report: dict[str, Any] = {"phase": "extract", "run_key": RUN, "processor": "api"} | kwargs
    with pytest.raises(ValidationError) as info:
        harness.orchestrator.handle_completion(
            report.pop("phase"), report.pop("run_key"), report.pop("processor"), **report
        )
    assert info.value.field == field
    assert fragment in str(info.value)
    assert harness.tracker.list_runs() == []


def test_both_stores_down_is_not_acknowledged_and_raises_a_critical_event(
    harness: Harness,
) -> None:
    """Nothing recorded, BothStoresFailed raised, one critical event for alerting."""
    harness.primary_fault.fail()
    harness.backup_fault.fail()
    with pytest.raises(BothStoresFailed):
        harness.complete("extract", "api")
    [event] = harness.events_of(EventKind.BOTH_STORES_FAILED)
    assert event.severity is Severity.CRITICAL
    assert event.run_key == RUN
    harness.primary_fault.heal()
    harness.backup_fault.heal()
    assert harness.tracker.primary.completions(RUN) == []
    assert harness.tracker.backup.completions(RUN) == []


def test_every_trigger_writes_a_phase_execution_to_both_stores(harness: Harness) -> None:
    """The execution record holds start, trigger time, duration, processors and reason."""
    harness.complete("extract", "api")
    harness.clock.advance(600)
    harness.complete("extract", "files")
    for store in (harness.tracker.primary, harness.tracker.backup):
        [execution] = store.phase_executions()
        assert execution.duration_seconds == 600
        assert execution.processors == ("api", "files")
        assert execution.reason is TriggerReason.COMPLETE


def test_phase_states_and_start_times(harness: Harness) -> None:
    """not_started → waiting → triggered; the next phase starts when the previous triggered."""
    states = lambda: [s.state for s in harness.orchestrator.run_status(RUN)]  # noqa: E731
    harness.complete("extract", "api")
    assert states() == [PhaseState.WAITING, PhaseState.NOT_STARTED, PhaseState.NOT_STARTED]
    harness.clock.advance(60)
    harness.complete("extract", "files")
    triggered_at = harness.clock.now()
    transform = harness.orchestrator.phase_status("transform", RUN)
    assert transform.started_at == triggered_at
    assert transform.deadline == triggered_at + timedelta(minutes=30)
    harness.clock.advance(31 * 60)
    assert states() == [PhaseState.TRIGGERED, PhaseState.TIMED_OUT, PhaseState.NOT_STARTED]


def test_a_manual_trigger_is_reason_manual_lists_the_missing_and_happens_once(
    harness: Harness,
) -> None:
    """An operator can push a phase on; the trigger says who was missing; twice is once."""
    harness.complete("extract", "api")
    result = harness.orchestrator.trigger("extract", RUN)
    assert result.claimed
    assert result.trigger.reason is TriggerReason.MANUAL
    assert result.trigger.missing == ("files",)
    again = harness.orchestrator.trigger("extract", RUN)
    assert not again.claimed
    assert again.trigger.trigger_id == result.trigger.trigger_id
    assert not harness.complete("extract", "files").claimed


def test_a_claim_deferred_during_an_outage_is_made_by_the_sweep(harness: Harness) -> None:
    """When neither store can decide, the claim waits; the sweep claims it once recovered."""
    harness.complete("extract", "api")
    harness.backup_fault.fail()
    harness.complete("extract", "files", status="failed")  # the backup misses this run now
    harness.backup_fault.heal()
    harness.clock.advance(31)  # the backup's breaker lets a trial through again
    harness.primary_fault.fail()
    result = harness.complete("extract", "files")
    assert result.phase_complete
    assert (result.claimed, result.deferred, result.trigger_id) == (False, True, None)
    assert harness.events_of(EventKind.CLAIM_DEFERRED)
    harness.primary_fault.heal()
    harness.clock.advance(31)
    # The primary still misses records of the run: the sweep defers again.
    assert [r.deferred for r in harness.orchestrator.sweep()] == [True]
    harness.tracker.resync()  # the replicator catches it up, then claims what was deferred
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1
    assert harness.orchestrator.sweep() == []


def test_correlation_ids_are_generated_when_absent(harness: Harness) -> None:
    """A report without a correlation id gets one (a random version-4 UUID's 32 hex
    digits, a new one each time), stored with the completion."""
    result = harness.complete("extract", "api")
    generated = uuid.UUID(hex=result.completion.correlation_id)
    assert (generated.version, generated.variant, generated.hex) == (
        4,
        uuid.RFC_4122,
        result.completion.correlation_id,
    )
    [stored] = harness.tracker.completions(RUN)
    assert stored.correlation_id == result.completion.correlation_id
    again = harness.complete("extract", "files")
    assert again.completion.correlation_id != result.completion.correlation_id


def test_a_stale_backup_never_claims_what_the_primary_already_claimed(harness: Harness) -> None:
    """Primary claims while the backup is down; then the primary fails: a duplicate report
    must not make the stale backup claim the same phase a second time."""
    harness.complete("extract", "api")
    harness.backup_fault.fail()
    assert harness.complete("extract", "files").claimed  # on the primary only
    harness.backup_fault.heal()
    harness.clock.advance(31)
    harness.primary_fault.fail()
    duplicate = harness.complete("extract", "files")
    assert not duplicate.claimed
    assert duplicate.deferred
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1
    harness.primary_fault.heal()
    harness.clock.advance(31)
    assert harness.orchestrator.sweep() == []
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1


def test_a_batch_answers_each_item_and_records_the_good_ones(harness: Harness) -> None:
    """Bad items are rejected with their index, field and code; the good ones are recorded
    in one batch, which completes the phase and claims its trigger once."""
    items = harness.orchestrator.record_completions(
        [
            {"phase": "extract", "run_key": RUN, "processor": "api"},
            {"phase": "extract", "run_key": "yesterday", "processor": "files"},
            "not an object",
            {"phase": "extract", "run_key": RUN, "processor": "files"},
            {"phase": "nope", "run_key": RUN, "processor": "files"},
        ]
    )
    assert [item.index for item in items] == [0, 1, 2, 3, 4]
    assert [item.ok for item in items] == [True, False, False, True, False]
    errors = [item.to_dict()["error"] for item in items if not item.ok]
    assert [(e["field"], e["code"]) for e in errors] == [
        ("run_key", "bad_run_key"),
        ("item", "wrong_type"),
        ("phase", "unknown_phase"),
    ]
    first, last = items[0].result, items[3].result
    assert first is not None
    assert last is not None
    # One claim per phase-run, answered on its first item; every item names the trigger.
    assert (first.claimed, last.claimed) == (True, False)
    assert first.trigger_id == last.trigger_id is not None
    assert {c.processor for c in harness.tracker.completions(RUN)} == {"api", "files"}
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1


def test_the_async_path_records_and_claims_like_the_blocking_one(harness: Harness) -> None:
    """arecord_completions (the service's path) gives the same answers and one claim."""
    import asyncio

    first = asyncio.run(
        harness.orchestrator.arecord_completions(
            [{"phase": "extract", "run_key": RUN, "processor": "api"}]
        )
    )
    second = asyncio.run(
        harness.orchestrator.arecord_completions(
            [
                {"phase": "extract", "run_key": RUN, "processor": "files"},
                {"phase": "extract", "run_key": RUN, "processor": "files"},
            ]
        )
    )
    assert [i.result.phase_complete for i in first if i.result] == [False]
    assert [(i.result.claimed, i.result.phase_complete) for i in second if i.result] == [
        (True, True),
        (False, True),
    ]
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1


def test_metadata_is_serialised_once_and_kept_as_given(harness: Harness) -> None:
    """The validated metadata's JSON text travels with the completion to the stores."""
    result = harness.complete("extract", "api", metadata={"rows": 3, "tags": ("a", "b")})
    assert result.completion.metadata_encoded == '{"rows":3,"tags":["a","b"]}'
    [stored] = harness.tracker.completions(RUN)
    assert dict(stored.metadata) == {"rows": 3, "tags": ["a", "b"]}


def _completing(run_keys: list[str]) -> list[dict[str, str]]:
    """Reports completing ``extract`` for each run key (both processors)."""
    return [
        {"phase": "extract", "run_key": key, "processor": name}
        for key in run_keys
        for name in ("api", "files")
    ]


def test_a_batch_completing_several_runs_claims_them_together(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The phase-runs one batch completes are decided in one claim call on the primary
    and mirrored in one import; each is claimed once, answered on its first item, and
    its execution is kept in both stores."""
    keys = ["2026-01-10", "2026-01-11", "2026-01-12"]
    primary = harness.tracker.primary
    calls: list[int] = []
    if hasattr(primary, "claim_triggers"):
        real = primary.claim_triggers
        monkeypatch.setattr(
            primary, "claim_triggers", lambda ts, *rest: calls.append(len(ts)) or real(ts, *rest)
        )
    # Another replica already claimed the middle run's trigger.
    harness.complete("extract", "api", run_key=keys[1])
    assert harness.complete("extract", "files", run_key=keys[1]).claimed
    calls.clear()
    items = harness.orchestrator.record_completions(_completing(keys))
    results = [item.result for item in items]
    assert all(r is not None and r.phase_complete for r in results)
    claimed = [r.claimed for r in results if r is not None]
    assert claimed == [True, False, False, False, True, False]
    ids = [r.trigger_id for r in results if r is not None]
    assert ids == [trigger_id_for("orders", "extract", key) for key in keys for _ in range(2)]
    if harness.tracker.claims_after_writes:
        assert calls == []  # claimed in the batch's own transaction (write_claims.py)
    elif hasattr(primary, "claim_triggers"):
        assert calls == [2]  # the two runs not yet claimed, in one call
    for store in (harness.tracker.primary, harness.tracker.backup):
        held = {e.trigger.run_key for key in keys for e in store.triggers(key)}
        assert held == set(keys)
        assert {e.run_key for e in store.phase_executions()} == set(keys)
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 3
    harness.runtime.dispatcher.run_once()
    assert sorted(t.run_key for t in harness.transport.delivered) == keys


def test_a_batch_completing_runs_while_the_primary_is_out_defers_each_claim(
    harness: Harness,
) -> None:
    """With the primary out, every phase-run the batch completed is recorded (on the
    backup) and deferred; the sweep claims each once when the primary is back."""
    keys = ["2026-01-10", "2026-01-11"]
    harness.primary_fault.fail()
    items = harness.orchestrator.record_completions(_completing(keys))
    results = [item.result for item in items if item.result is not None]
    assert [(r.claimed, r.deferred) for r in results] == [(False, True), (False, True)] * 2
    harness.primary_fault.heal()
    harness.clock.advance(31)
    harness.tracker.resync()
    harness.orchestrator.sweep()
    assert sorted(e.run_key for e in harness.events_of(EventKind.TRIGGER_CLAIMED)) == keys
    assert harness.orchestrator.sweep() == []


def test_a_lost_batch_of_execution_records_is_alerted_per_phase_run(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both stores refuse the batch's execution records: each phase-run is alerted as
    critical and its trigger is still claimed and delivered. (A SQL primary keeps them in
    the claim's own transaction, where they cannot be lost apart from the claim: here it
    is made to record them apart, as every other store does.)"""
    keys = ["2026-01-10", "2026-01-11"]

    def refuse(_executions: Any) -> Any:
        raise BothStoresFailed("record phase executions", None, None)

    monkeypatch.setattr(
        harness.tracker.primary, "keeps_executions_with_claims", False, raising=False
    )
    monkeypatch.setattr(harness.tracker, "claims_after_writes", False)
    harness.tracker.record_phase_executions = refuse  # type: ignore[method-assign]
    items = harness.orchestrator.record_completions(_completing(keys))
    assert sum(bool(i.result and i.result.claimed) for i in items) == 2
    lost = [
        e
        for e in harness.events_of(EventKind.BOTH_STORES_FAILED)
        if "execution record" in e.message
    ]
    assert sorted((e.run_key, e.severity) for e in lost) == [
        (key, Severity.CRITICAL) for key in keys
    ]
    assert len(harness.runtime.dispatcher.run_once().delivered) == 2


def test_a_claim_deferred_by_a_replica_that_crashed_is_found_by_the_rolling_sweep(
    harness: Harness,
) -> None:
    """A replica defers a claim (primary out), then dies with that memory. Newer runs push
    the run out of every other replica's recent-runs sweep; the rolling sweep still finds
    the complete, untriggered phase and claims it once, within one turn."""
    from phasegate.orchestrator import Orchestrator

    old = "2026-01-01"
    harness.complete("extract", "api", run_key=old)
    harness.primary_fault.fail()
    assert harness.complete("extract", "files", run_key=old).deferred
    harness.orchestrator._deferred.clear()  # the replica dies, and what it knew with it
    harness.primary_fault.heal()
    harness.clock.advance(31)
    harness.tracker.resync()
    for day in range(60):  # newer runs, none complete
        key = (datetime(2026, 2, 1) + timedelta(days=day)).strftime("%Y-%m-%d")
        harness.complete("extract", "api", run_key=key)
    survivor = Orchestrator(
        harness.orchestrator.pipeline,
        harness.tracker,
        events=harness.orchestrator.events,
        clock=harness.clock,
    )
    assert survivor.sweep() == []  # the 50 most recent runs hold nothing to claim
    claimed = []
    for _ in range(3):  # 61 runs, 25 per page: one turn
        claimed += [r for r in survivor.sweep_rolling(page=25) if r.claimed]
    assert [(r.trigger.phase, r.trigger.run_key) for r in claimed] == [("extract", old)]
    assert all(not survivor.sweep_rolling(page=25) for _ in range(3))
    assert len(harness.events_of(EventKind.TRIGGER_CLAIMED)) == 1


def test_a_one_shot_maintenance_pass_takes_a_whole_rolling_turn(harness: Harness) -> None:
    """``check-timeouts`` (a fresh process each time) sweeps the whole rolling window in
    one pass; the service's loop takes one step of 200 runs per pass."""
    days = [(datetime(2026, 2, 1) + timedelta(days=n)).strftime("%Y-%m-%d") for n in range(261)]
    lost = days[205]  # 55 newer runs: outside the recent sweep and the first step
    for key in days:
        harness.complete("extract", "api", run_key=key)
    harness.primary_fault.fail()
    assert harness.complete("extract", "files", run_key=lost).deferred
    harness.orchestrator._deferred.clear()  # the replica that deferred it died
    harness.primary_fault.heal()
    harness.clock.advance(31)
    harness.tracker.resync()
    assert harness.runtime.maintain(rolling_steps=1).claimed == frozenset()
    swept = harness.runtime.maintain(rolling_steps=None)
    assert [(r.trigger.run_key, r.claimed) for r in swept.swept] == [(lost, True)]


def test_concurrent_reports_of_one_phase_run_share_one_decision(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight threads whose reports all complete one phase-run at once: one of them reads
    and claims, the others wait for its answer (same trigger id, not claimed by them).
    (Claims made apart from the write: see the next test for those made in it.)"""
    monkeypatch.setattr(harness.tracker, "claims_after_writes", False)
    harness.complete("extract", "api")
    entered = threading.Semaphore(0)
    real_settle = harness.orchestrator._trigger_completed
    real_claim = harness.tracker.claim_triggers
    claims: list[str] = []

    def settle(*args: Any) -> Any:
        entered.release()
        return real_settle(*args)

    def claim(triggers: Any, *rest: Any) -> Any:
        claims.extend(trigger.trigger_id for trigger in triggers)
        for _ in range(8):  # hold the decision until every thread is waiting on it
            assert entered.acquire(timeout=10)
        return real_claim(triggers, *rest)

    monkeypatch.setattr(harness.orchestrator, "_trigger_completed", settle)
    monkeypatch.setattr(harness.tracker, "claim_triggers", claim)
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def report() -> None:
        barrier.wait()
        results.append(harness.complete("extract", "files"))

    threads = [threading.Thread(target=report) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert claims == [trigger_id_for("orders", "extract", RUN)]
    assert sorted(r.claimed for r in results) == [False] * 7 + [True]
    assert {r.trigger_id for r in results} == {claims[0]}


def test_a_decision_that_fails_fails_the_callers_waiting_on_it_and_is_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A waiter gets the decider's error (it was not answered); the next caller decides
    afresh instead of finding a stale decision."""
    from concurrent.futures import Future

    from phasegate import results
    from phasegate.model import PhaseRun
    from phasegate.results import Decisions, _Claimed

    waiting = threading.Event()

    class Watched(Future):  # type: ignore[type-arg]
        def result(self, timeout: float | None = None) -> Any:
            waiting.set()
            return super().result(timeout)

    monkeypatch.setattr(results, "Future", Watched)
    decisions, run = Decisions(), PhaseRun("extract", RUN)
    deciding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def failing(mine: list[PhaseRun]) -> dict[PhaseRun, _Claimed]:
        deciding.set()
        assert release.wait(10)
        raise BothStoresFailed("claim", None, None)

    def call(decide: Any) -> None:
        try:
            decisions.decide([run], decide)
        except BothStoresFailed as exc:
            errors.append(exc)

    leader = threading.Thread(target=call, args=(failing,))
    leader.start()
    assert deciding.wait(10)
    follower = threading.Thread(target=call, args=(lambda mine: {},))
    follower.start()
    assert waiting.wait(10)  # the follower waits on the decision under way
    release.set()
    leader.join(10)
    follower.join(10)
    assert len(errors) == 2
    fresh = decisions.decide([run], lambda mine: {r: _Claimed("id", True, False) for r in mine})
    assert fresh == {run: _Claimed("id", True, False)}
