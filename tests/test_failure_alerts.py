"""Every failure class is alerted, not only logged: each test injects one failure and checks
both the log line (with its severity) and the alert a local Slack webhook receives.

Failure classes tested elsewhere, with the same two checks:

- reconciliation divergence, divergence left after repair, a failed reconciliation pass,
  a double claim found by reconciliation: ``tests/test_reconcile.py``;
- an alert sink that keeps failing: ``tests/alerts/test_sink_failures.py``;
- a dead-lettered Pub/Sub message: ``tests/gcp/test_consume_pubsub.py`` and
  ``tests/gcp/test_push.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from phasegate.errors import BothStoresFailed, TransientStoreError
from phasegate.events import EventKind
from phasegate.service import create_app
from phasegate.testing import FakeClock
from phasegate.timeouts import check_timeouts
from support import Harness, RecordingServer

RUN = "2026-01-28"
RED, AMBER, GREEN = "#D32F2F", "#F2A900", "#2EB67D"

PIPELINE = """
[pipeline]
name = "orders"
{resilience}
[alerts.slack]
webhook_url = "{url}/services/T0/B0/FAILURESECRET"
min_severity = "warning"

[[phases]]
name = "extract"
processors = ["api", "files"]
next = "transform"
timeout = "1h"

[[phases]]
name = "transform"
processors = ["clean"]
"""


class Rig:
    """A runtime whose alerts go to a local Slack webhook, and what reached it."""

    def __init__(self, harness: Harness, server: RecordingServer) -> None:
        self.harness = harness
        self.server = server

    @property
    def runtime(self) -> Any:
        return self.harness.runtime

    @property
    def inner(self) -> tuple[Any, Any]:
        """The memory stores behind the fault wrappers (primary, backup)."""
        return self.harness.tracker.primary.inner, self.harness.tracker.backup.inner

    def messages(self, text: str) -> list[tuple[str, str]]:
        """``(colour, whole message)`` of each Slack message whose text contains ``text``."""
        assert self.runtime.alerter is not None
        assert self.runtime.alerter.drain(10)
        found = []
        for request in self.server.requests:
            body = request.json()
            if text in body.get("text", ""):
                found.append((body["attachments"][0]["color"], json.dumps(body)))
        return found

    def colours(self, text: str) -> list[str]:
        """The colour of each Slack message whose text contains ``text``, in order."""
        return [colour for colour, _ in self.messages(text)]

    def complete_extract(self) -> Any:
        self.harness.complete("extract", "api")
        return self.harness.complete("extract", "files")


def make_rig(
    tmp_path: Path, clock: FakeClock, server: RecordingServer, backend: str, resilience: str = ""
) -> Rig:
    text = PIPELINE.format(url=server.url, resilience=resilience)
    return Rig(Harness(tmp_path, clock, text, backend=backend), server)


@pytest.fixture
def sql_rig(tmp_path: Path, clock: FakeClock) -> Iterator[Rig]:
    """SQLite stores that fail at the driver level on demand."""
    with RecordingServer() as server:
        rig = make_rig(tmp_path, clock, server, "sqlite")
        yield rig
        rig.runtime.close()


@pytest.fixture
def rig(tmp_path: Path, clock: FakeClock) -> Iterator[Rig]:
    """Memory stores behind fault wrappers; single operations can be made to fail."""
    with RecordingServer() as server:
        rig = make_rig(tmp_path, clock, server, "memory")
        yield rig
        rig.runtime.close()


def logged(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


def failing(what: str) -> Callable[..., Any]:
    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise TransientStoreError(f"{what}: connection lost (injected)")

    return fail


# -- the stores ------------------------------------------------------------------------


def test_both_stores_failing_a_completion_is_critical_and_resolved_when_they_recover(
    sql_rig: Rig, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """Neither store takes a report: CRITICAL log, red alert; the next recorded report resolves it."""
    sql_rig.harness.primary_fault.fail()
    sql_rig.harness.backup_fault.fail()
    with pytest.raises(BothStoresFailed):
        sql_rig.harness.complete("extract", "api")
    assert logged(caplog, logging.CRITICAL, "record 1 completion(s) for run 2026-01-28")
    sql_rig.harness.primary_fault.heal()
    sql_rig.harness.backup_fault.heal()
    clock.advance(31)  # past the breakers' reset
    sql_rig.harness.complete("extract", "api")
    assert sql_rig.colours("were not recorded: both stores failed") == [RED, GREEN]
    assert "FAILURESECRET" not in json.dumps([r.json() for r in sql_rig.server.requests])


def test_a_phase_execution_record_lost_on_both_stores_is_critical(
    rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trigger is claimed but neither store keeps its execution record: CRITICAL, red."""
    for store in rig.inner:
        monkeypatch.setattr(store, "record_phase_execution", failing("phase log"))
    result = rig.complete_extract()
    assert result.claimed
    [line] = logged(caplog, logging.CRITICAL, "record phase execution extract for run 2026-01-28")
    assert "both stores failed" in line
    [(colour, message)] = rig.messages("execution record of extract")
    assert colour == RED
    assert "the trigger itself is claimed and will be delivered" in message


def test_a_read_both_stores_fail_is_critical_and_the_next_good_read_resolves_it(
    sql_rig: Rig, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """A dispatcher pass whose read fails on both stores: CRITICAL log, red; resolved after."""
    sql_rig.complete_extract()
    sql_rig.harness.primary_fault.fail()
    sql_rig.harness.backup_fault.fail()
    with pytest.raises(BothStoresFailed):
        sql_rig.runtime.dispatcher.run_once(include_deferred=True)
    assert logged(caplog, logging.CRITICAL, "read pending triggers failed: both stores failed")
    sql_rig.harness.primary_fault.heal()
    sql_rig.harness.backup_fault.heal()
    clock.advance(31)
    assert sql_rig.runtime.dispatcher.run_once(include_deferred=True).ok
    assert sql_rig.colours("read pending triggers failed") == [RED, GREEN]


def test_a_claim_both_stores_fail_under_the_backup_policy_is_critical(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """claim_fallback = "backup" with both stores refusing the claim: CRITICAL, red; resolved after."""
    with RecordingServer() as server:
        rig = make_rig(
            tmp_path, clock, server, "memory", '[resilience]\nclaim_fallback = "backup"\n'
        )
        try:
            primary, backup = rig.inner
            real = primary.claim_trigger, backup.claim_trigger
            primary.claim_trigger = failing("primary claims")
            backup.claim_trigger = failing("backup claims")
            rig.harness.complete("extract", "api")
            with pytest.raises(BothStoresFailed):
                rig.harness.complete("extract", "files")
            assert logged(caplog, logging.CRITICAL, "claim trigger extract/2026-01-28 for run")
            primary.claim_trigger, backup.claim_trigger = real
            clock.advance(31)
            [swept] = rig.runtime.orchestrator.sweep()
            assert swept.claimed
            assert rig.colours("claim trigger extract/2026-01-28 for run") == [RED, GREEN]
        finally:
            rig.runtime.close()


def test_a_deferred_claim_warns_and_the_sweep_that_claims_it_resolves_it(
    rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """The primary cannot decide a claim: WARNING log, amber alert; the later claim resolves it."""
    primary, _ = rig.inner
    real = primary.claim_trigger
    monkeypatch.setattr(primary, "claim_trigger", failing("primary claims"))
    result = rig.complete_extract()
    assert result.deferred
    assert logged(caplog, logging.WARNING, "deferred until the primary store decides it")
    monkeypatch.setattr(primary, "claim_trigger", real)
    clock.advance(31)
    assert [r.claimed for r in rig.runtime.orchestrator.retry_deferred()] == [True]
    assert rig.colours("trigger of extract for 2026-01-28 deferred") == [AMBER, GREEN]


def test_a_store_that_stays_behind_is_degraded_and_resolved_once_caught_up(
    sql_rig: Rig, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """The backup misses writes for five minutes: WARNING, amber; caught up: one resolved message."""
    caplog.set_level(logging.INFO, logger="phasegate")
    sql_rig.harness.backup_fault.fail()
    sql_rig.harness.complete("extract", "api")
    clock.advance(301)
    sql_rig.runtime.tracker.resync()
    sql_rig.runtime.tracker.resync()  # judged once, not once per pass
    [line] = logged(caplog, logging.WARNING, "the backup store has missed writes of 1 run(s)")
    assert "for 5 min and cannot be caught up yet" in line
    sql_rig.harness.backup_fault.heal()
    clock.advance(31)
    assert sql_rig.runtime.tracker.resync()
    assert logged(caplog, logging.INFO, "the backup store has caught up")
    assert sql_rig.colours("backup store has") == [AMBER, GREEN]


def test_a_breaker_that_opens_warns_and_its_closing_resolves_it(
    sql_rig: Rig, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """The primary fails: its breaker opens (WARNING, amber); it answers again: closed (green)."""
    sql_rig.harness.primary_fault.fail()
    sql_rig.harness.complete("extract", "api")
    assert logged(caplog, logging.WARNING, "circuit primary_store: closed -> open")
    sql_rig.harness.primary_fault.heal()
    clock.advance(31)
    sql_rig.harness.complete("extract", "files")
    assert sql_rig.colours("primary_store circuit opened") == [AMBER, GREEN]


# -- delivery --------------------------------------------------------------------------


def test_a_failed_delivery_is_critical_and_the_delivery_that_follows_resolves_it(
    rig: Rig, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """The receiver is down: CRITICAL log, red alert; delivered later: resolved."""
    rig.harness.transport.failing = True
    result = rig.complete_extract()
    assert rig.runtime.dispatcher.run_once().failed
    [line] = logged(caplog, logging.CRITICAL, f"trigger {result.trigger_id}")
    assert "not delivered after 3 tries" in line
    rig.harness.transport.failing = False
    clock.advance(61)
    assert rig.runtime.dispatcher.run_once().delivered == (result.trigger_id,)
    assert rig.colours("not delivered after 3 tries") == [RED, GREEN]


def test_a_trigger_delivered_but_not_marked_is_critical_and_resolved_when_marked(
    rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """Neither store marks a delivered trigger: CRITICAL, red (it goes out again); marked: resolved."""
    result = rig.complete_extract()
    # The primary marks it; the backup takes the delivered entry as an import.
    names = ("mark_delivered", "import_records")
    real = [(store, name, getattr(store, name)) for store in rig.inner for name in names]
    for store, name, _ in real:
        monkeypatch.setattr(store, name, failing("outbox"))
    assert rig.runtime.dispatcher.run_once().delivered == (result.trigger_id,)
    [line] = logged(caplog, logging.CRITICAL, "was delivered but not marked delivered")
    assert result.trigger_id in line
    for store, name, method in real:
        monkeypatch.setattr(store, name, method)
    clock.advance(61)  # the lease and the breakers expire
    assert rig.runtime.dispatcher.run_once().delivered == (result.trigger_id,)
    assert [t.trigger_id for t in rig.harness.transport.delivered] == [result.trigger_id] * 2
    assert rig.colours("not marked delivered") == [RED, GREEN]


def test_a_delivery_failure_that_cannot_be_recorded_is_critical_and_resolved_when_recorded(
    rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """A failed delivery neither store records: CRITICAL, red; recorded at the next pass: resolved."""
    result = rig.complete_extract()
    rig.harness.transport.failing = True
    real = [store.record_delivery_failure for store in rig.inner]
    for store in rig.inner:
        monkeypatch.setattr(store, "record_delivery_failure", failing("outbox"))
    rig.runtime.dispatcher.run_once()
    [line] = logged(caplog, logging.CRITICAL, "could not be recorded")
    assert f"trigger {result.trigger_id}" in line
    for store, record in zip(rig.inner, real, strict=True):
        monkeypatch.setattr(store, "record_delivery_failure", record)
    clock.advance(61)
    rig.runtime.dispatcher.run_once()
    assert rig.colours("could not be recorded") == [RED, GREEN]


# -- the pipeline itself ---------------------------------------------------------------


def test_a_trigger_a_dead_replica_leased_is_warned_once_per_replica(
    rig: Rig, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """Triggers a crashed replica leased and never delivered: WARNING, amber, one per owner."""
    results = [rig.complete_extract()]
    rig.harness.complete("extract", "api", run_key="2026-01-29")
    results.append(rig.harness.complete("extract", "files", run_key="2026-01-29"))
    now = clock.now()
    leased = rig.runtime.tracker.lease_triggers("dead-replica", now, now + timedelta(seconds=30))
    assert len(leased) == 2
    clock.advance(31)
    delivered = rig.runtime.dispatcher.run_once().delivered
    assert sorted(delivered) == sorted(r.trigger_id for r in results)
    lines = logged(caplog, logging.WARNING, "whose lease expired before it was delivered")
    assert len(lines) == 2
    assert all("dead-replica" in line for line in lines)
    assert rig.colours("whose lease expired") == [AMBER]


def test_a_phase_past_its_timeout_warns(
    sql_rig: Rig, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """A processor missing past the phase's timeout: WARNING log and amber alert naming it."""
    sql_rig.harness.complete("extract", "api")
    clock.advance(3601)
    [finding] = check_timeouts(sql_rig.runtime.orchestrator)
    assert finding.first_report
    [line] = logged(caplog, logging.WARNING, "extract for 2026-01-28 timed out")
    assert "missing: files" in line
    assert sql_rig.colours("timed out after") == [AMBER]


def test_a_processor_reporting_failed_warns(sql_rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """A processor reports ``failed``: WARNING log and amber alert naming the processor."""
    sql_rig.harness.complete("extract", "api", status="failed")
    assert logged(caplog, logging.WARNING, "processor api reported failed for 2026-01-28")
    assert sql_rig.colours("processor api reported failed") == [AMBER]


# -- unexpected errors inside library calls ----------------------------------------------


class Boom(Exception):
    """A bug: no phasegate error, nothing maps it."""


def break_reads(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the stores' reads: of completions (status, timeouts) and of triggers (a
    claim reads the run's triggers; its completions come with the write's answer)."""
    for store in rig.inner:
        monkeypatch.setattr(store, "completions", _raise_boom)
        monkeypatch.setattr(store, "triggers", _raise_boom)


def _raise_boom(*_args: Any, **_kwargs: Any) -> Any:
    raise Boom("driver exploded: KeyError 'rows'")


ENTRY_POINTS: dict[str, Callable[[Rig], Any]] = {
    "Runtime.record": lambda rig: rig.runtime.record("extract", RUN, "api"),
    "Runtime.record_report": lambda rig: rig.runtime.record_report(
        {"phase": "extract", "run_key": RUN, "processor": "api"}
    ),
    "Runtime.arecord_report": lambda rig: asyncio.run(
        rig.runtime.arecord_report({"phase": "extract", "run_key": RUN, "processor": "api"})
    ),
    "Orchestrator.handle_completion": lambda rig: rig.harness.complete("extract", "api"),
    "Orchestrator.record_completions": lambda rig: rig.runtime.orchestrator.record_completions(
        [{"phase": "extract", "run_key": RUN, "processor": "api"}]
    ),
    "check_timeouts": lambda rig: check_timeouts(rig.runtime.orchestrator),
    "Runtime.maintain": lambda rig: rig.runtime.maintain(),
}


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_an_unexpected_error_in_a_library_call_is_alerted_once_and_reraised_unchanged(
    entry_point: str,
    rig: Rig,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug under a public call: CRITICAL log with traceback, one red alert with it, same error."""
    rig.harness.complete("extract", "files")
    break_reads(rig, monkeypatch)
    with pytest.raises(Boom) as raised:
        ENTRY_POINTS[entry_point](rig)
    [record] = [
        r
        for r in caplog.records
        if r.levelno == logging.CRITICAL and "unexpected" in r.msg % r.args
    ]
    assert record.exc_info is not None
    assert record.exc_info[1] is raised.value
    [(colour, message)] = rig.messages("unexpected Boom in")
    assert colour == RED
    assert f"unexpected Boom in {entry_point}: driver exploded" in message
    assert "Stack trace" in message
    assert "driver exploded" in message
    [event] = rig.harness.events_of(EventKind.UNEXPECTED_ERROR)
    assert event.error is raised.value


def test_an_unexpected_error_in_a_dispatcher_pass_is_alerted_and_the_loop_keeps_going(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A transport with a bug: one red alert; ``run_forever`` logs it and runs the next pass."""
    rig.complete_extract()
    stop = threading.Event()
    passes = []

    def broken(trigger: Any) -> None:
        passes.append(trigger.trigger_id)
        if len(passes) == 2:
            stop.set()
        rig.harness.clock.advance(61)  # the failed pass's lease expires
        raise Boom("transport bug")

    rig.harness.transport.deliver = broken  # type: ignore[method-assign]
    rig.runtime.dispatcher.run_forever(stop, interval=0)
    assert len(passes) == 2
    assert logged(caplog, logging.CRITICAL, "unexpected Boom in Dispatcher.run_once")
    assert logged(caplog, logging.WARNING, "dispatcher pass failed: unexpected Boom (alerted)")
    assert rig.colours("unexpected Boom in Dispatcher.run_once") == [RED]


def test_an_unexpected_error_behind_the_service_is_alerted_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library call and the service's handler both see the bug: one alert, a 500."""
    rig.harness.complete("extract", "files")
    break_reads(rig, monkeypatch)
    client = TestClient(create_app(rig.runtime), raise_server_exceptions=False)
    response = client.post(
        "/v1/completions", json={"phase": "extract", "run_key": RUN, "processor": "api"}
    )
    assert response.status_code == 500
    assert len(rig.harness.events_of(EventKind.UNEXPECTED_ERROR)) == 1
    assert rig.colours("unexpected Boom") == [RED]


def test_an_unexpected_error_in_the_replicator_is_alerted(
    sql_rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while catching a store up: CRITICAL log and a red alert; raised to the caller."""
    sql_rig.harness.backup_fault.fail()
    sql_rig.harness.complete("extract", "api")
    sql_rig.harness.backup_fault.heal()
    monkeypatch.setattr(sql_rig.runtime.tracker.primary, "export_runs", _raise_boom)
    sql_rig.harness.clock.advance(31)
    with pytest.raises(Boom):
        sql_rig.runtime.tracker.resync()
    assert logged(caplog, logging.CRITICAL, "unexpected Boom in Replicator.run_once")
    assert sql_rig.colours("unexpected Boom in Replicator.run_once") == [RED]
