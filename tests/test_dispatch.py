"""Delivery through the outbox: at least once, same id every time, never dropped (guarantee 4)."""

from __future__ import annotations

import json
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from phasegate.errors import TransientDeliveryError
from phasegate.events import EventKind, Severity
from phasegate.model import Trigger, TriggerReason, trigger_id_for
from phasegate.testing import FakeClock
from phasegate.transports import open_transport
from phasegate.transports.http import HttpTransport
from phasegate.transports.log import LogTransport
from support import Harness, RecordingServer


@pytest.fixture(params=["sqlite", "memory"])
def harness_backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on SQLite and on the in-memory store."""
    return str(request.param)


RUN = "2026-01-28"


def complete_extract(harness: Harness) -> str:
    harness.complete("extract", "api")
    result = harness.complete("extract", "files")
    assert result.trigger_id is not None
    return result.trigger_id


def test_a_claimed_trigger_is_delivered_and_marked_in_both_stores(harness: Harness) -> None:
    """One pass delivers it; both stores record the delivery; it is not pending any more."""
    trigger_id = complete_extract(harness)
    report = harness.runtime.dispatcher.run_once()
    assert report.delivered == (trigger_id,)
    assert [t.trigger_id for t in harness.transport.delivered] == [trigger_id]
    for store in (harness.tracker.primary, harness.tracker.backup):
        [entry] = store.triggers(RUN)
        assert entry.delivered_at == harness.clock.now()
    assert harness.runtime.dispatcher.run_once().delivered == ()


def test_a_failing_transport_is_retried_deferred_alerted_and_delivered_later(
    harness: Harness,
) -> None:
    """Retries with backoff, then a critical event and a deferral; later the same id goes out."""
    trigger_id = complete_extract(harness)
    harness.transport.failing = True
    report = harness.runtime.dispatcher.run_once()
    assert report.failed[0][0] == trigger_id
    assert harness.transport.attempts == 3
    [event] = harness.events_of(EventKind.DELIVERY_FAILED)
    assert event.severity is Severity.CRITICAL
    assert trigger_id in event.message
    [entry] = harness.tracker.triggers(RUN)
    assert (entry.attempts, entry.last_error) == (1, "receiver down")
    assert harness.runtime.dispatcher.run_once() == type(report)()  # not due yet
    harness.transport.failing = False
    harness.clock.advance(5)
    assert harness.runtime.dispatcher.run_once().delivered == (trigger_id,)
    assert [t.trigger_id for t in harness.transport.delivered] == [trigger_id]


def test_redelivery_backs_off_exponentially(harness: Harness) -> None:
    """Each failed round doubles the wait before the next one."""
    complete_extract(harness)
    harness.transport.failing = True
    waits = []
    for _ in range(4):
        before = harness.clock.now()
        harness.runtime.dispatcher.run_once()
        [entry] = harness.tracker.triggers(RUN)
        assert entry.next_attempt_at is not None
        waits.append(round((entry.next_attempt_at - harness.clock.now()).total_seconds()))
        harness.clock.advance((entry.next_attempt_at - before).total_seconds() + 1)
    assert waits == [5, 10, 20, 40]


def _trigger() -> Trigger:
    return Trigger(
        trigger_id=trigger_id_for("orders", "extract", RUN),
        pipeline="orders",
        phase="extract",
        next_phase="transform",
        run_key=RUN,
        reason=TriggerReason.COMPLETE,
        triggered_at=FakeClock().now(),
        processors=("api", "files"),
    )


def test_the_http_transport_posts_json_with_an_idempotency_key() -> None:
    """POST of the message with Idempotency-Key = trigger id; 2xx means delivered."""
    with RecordingServer((202, {}, b"")) as server:
        transport = open_transport(server.url + "/hooks/phase")
        assert isinstance(transport, HttpTransport)
        transport.deliver(_trigger())
        transport.close()
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/hooks/phase")
    assert request.headers["Idempotency-Key"] == _trigger().trigger_id
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == _trigger().to_message()


@pytest.mark.parametrize("status", [500, 404, 429])
def test_the_http_transport_reports_non_2xx_as_transient_without_credentials(status: int) -> None:
    """A 500, 404 or 429 is a transient delivery error; the URL's secrets never appear."""
    with RecordingServer((status, {}, b"no")) as server:
        url = server.url.replace("http://", "http://user:sekrit@") + "/x?token=abc"
        transport = HttpTransport(url)
        with pytest.raises(TransientDeliveryError, match=f"HTTP {status}") as info:
            transport.deliver(_trigger())
        transport.close()
    assert "sekrit" not in str(info.value)
    assert "abc" not in str(info.value)


def test_the_http_transport_maps_a_refused_connection_to_transient() -> None:
    """Nothing listening is a transient error too."""
    with RecordingServer() as server:
        url = server.url
    transport = HttpTransport(url, timeout=1)
    with pytest.raises(TransientDeliveryError, match="failed: ConnectError"):
        transport.deliver(_trigger())
    transport.close()


def test_the_log_transport_appends_one_json_line_per_trigger(tmp_path: Path) -> None:
    """``log:/path`` appends the message as a JSON line."""
    path = tmp_path / "out" / "triggers.jsonl"
    transport = open_transport(f"log:{path}")
    assert isinstance(transport, LogTransport)
    transport.deliver(_trigger())
    transport.deliver(_trigger())
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [_trigger().to_message()] * 2
    assert transport.describe() == f"log:{path}"


def test_the_log_transport_delivers_to_dev_null_and_pipes(tmp_path: Path) -> None:
    """``log:/dev/null`` (discard) and a FIFO take triggers: they cannot be fsynced, so
    they are not, instead of failing every delivery with EINVAL."""
    open_transport("log:/dev/null").deliver(_trigger())
    fifo = tmp_path / "triggers.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    open_transport(f"log:{fifo}").deliver(_trigger())
    reader.join(5)
    assert [json.loads(line) for line in received[0].splitlines()] == [_trigger().to_message()]


def test_the_log_transport_names_the_file_it_cannot_append_to(tmp_path: Path) -> None:
    """A file that cannot be opened is a transient delivery error naming it."""
    folder = tmp_path / "triggers.jsonl"
    folder.mkdir()  # a folder where the file should be
    with pytest.raises(TransientDeliveryError, match=f"cannot append to {folder}"):
        open_transport(f"log:{folder}").deliver(_trigger())


def test_a_pass_appends_its_triggers_to_a_log_file_with_one_sync(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``log:/path`` takes a pass's triggers together: every line is written and the file
    is synced once for all of them (not once per trigger) before they are marked."""
    import phasegate.transports.log as log_module

    syncs: list[int] = []
    real_fsync = log_module.os.fsync
    monkeypatch.setattr(log_module.os, "fsync", lambda fd: (syncs.append(fd), real_fsync(fd)))
    path = tmp_path / "triggers.jsonl"
    harness.runtime.dispatcher.transport = LogTransport(path)
    keys = ["2026-01-01", "2026-01-02", "2026-01-03"]
    for key in keys:
        harness.complete("extract", "api", run_key=key)
        harness.complete("extract", "files", run_key=key)
    report = harness.runtime.dispatcher.run_once()
    assert len(report.delivered) == 3
    assert report.ok
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(line["run_key"] for line in lines) == keys
    assert sorted(line["trigger_id"] for line in lines) == sorted(report.delivered)
    assert len(syncs) == 1
    assert harness.tracker.pending_triggers(harness.clock.now(), 10) == []


def test_a_log_file_that_cannot_take_a_pass_fails_each_trigger_naming_it(tmp_path: Path) -> None:
    """Every trigger of the group gets the error (the dispatcher retries them one by one)."""
    folder = tmp_path / "triggers.jsonl"
    folder.mkdir()
    outcomes = LogTransport(folder).deliver_many([_trigger(), _trigger()])
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, TransientDeliveryError)
        assert f"cannot append to {folder}" in str(outcome)


def test_a_pass_marks_what_it_delivered_together_in_each_store(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thirty triggers in one pass: every one delivered and marked in both stores, with
    one marking write per store for each group of MARK_EVERY (25), not one per trigger."""
    from phasegate.dispatch import MARK_EVERY

    keys = [f"2026-01-{day:02d}" for day in range(1, 31)]
    for key in keys:
        harness.complete("extract", "api", run_key=key)
        harness.complete("extract", "files", run_key=key)
    groups: list[int] = []
    real = harness.tracker.mark_delivered_many

    def counted(entries: Any, at: Any) -> Any:
        groups.append(len(entries))
        return real(entries, at)

    monkeypatch.setattr(harness.tracker, "mark_delivered_many", counted)
    assert len(harness.runtime.dispatcher.run_once().delivered) == 30
    assert groups == [MARK_EVERY, 30 - MARK_EVERY]
    for store in (harness.tracker.primary, harness.tracker.backup):
        for key in keys:
            [entry] = store.triggers(key)
            assert entry.delivered_at == harness.clock.now()
    assert len(harness.events_of(EventKind.TRIGGER_DELIVERED)) == 30
    assert harness.runtime.dispatcher.run_once().delivered == ()


def _claim_many(harness: Harness, count: int) -> list[str]:
    """``count`` phase-runs of extract completed in one batch: their trigger ids, oldest
    claim first."""
    from datetime import date, timedelta

    keys = [(date(2026, 1, 1) + timedelta(days=day)).isoformat() for day in range(count)]
    reports = [
        {"phase": "extract", "run_key": key, "processor": processor}
        for key in keys
        for processor in ("api", "files")
    ]
    items = harness.orchestrator.record_completions(reports)
    claimed = [i.result.trigger_id for i in items if i.result is not None and i.result.claimed]
    assert len(claimed) == count
    return [t for t in claimed if t is not None]


def test_a_plain_pass_leases_page_after_page_until_the_outbox_is_drained(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More due triggers than a page (batch_size): one pass leases and delivers them all."""
    dispatcher = harness.runtime.dispatcher
    dispatcher.batch_size = 10
    claimed = _claim_many(harness, 25)
    leases: list[int] = []
    real = dispatcher.lease

    def counted() -> Any:
        leased = real()
        leases.append(len(leased))
        return leased

    monkeypatch.setattr(dispatcher, "lease", counted)
    report = dispatcher.run_once()
    assert sorted(report.delivered) == sorted(claimed)
    assert leases == [10, 10, 5]
    assert sorted(t.trigger_id for t in harness.transport.delivered) == sorted(claimed)
    assert harness.tracker.pending_triggers(harness.clock.now(), 100) == []


def test_an_operator_pass_goes_through_an_outbox_longer_than_a_page(harness: Harness) -> None:
    """``phasegate dispatch``'s pass (include_deferred) tries every pending trigger, not
    only the first page of them."""
    dispatcher = harness.runtime.dispatcher
    dispatcher.batch_size = 10
    claimed = _claim_many(harness, 25)
    report = dispatcher.run_once(include_deferred=True)
    assert sorted(report.delivered) == sorted(claimed)
    assert report.failed == ()
    assert harness.tracker.pending_triggers(harness.clock.now(), 100) == []


def test_delivering_given_ids_finds_them_past_the_first_page(harness: Harness) -> None:
    """The newest five of 25 pending triggers, asked for by id (what ``complete`` and
    ``runtime.deliver`` do): delivered, and only they."""
    dispatcher = harness.runtime.dispatcher
    dispatcher.batch_size = 10
    claimed = _claim_many(harness, 25)
    newest = claimed[-5:]
    report = dispatcher.run_once(only=set(newest))
    assert sorted(report.delivered) == sorted(newest)
    assert sorted(t.trigger_id for t in harness.transport.delivered) == sorted(newest)
    left = harness.tracker.pending_triggers(harness.clock.now(), 100)
    assert sorted(e.trigger.trigger_id for e in left) == sorted(claimed[:-5])


def test_an_operator_pass_over_failing_deliveries_tries_each_trigger_once_and_ends(
    harness: Harness,
) -> None:
    """A receiver that is down: every pending trigger is tried once (three attempts) and
    reported failed; the pass ends although they all stay pending."""
    dispatcher = harness.runtime.dispatcher
    dispatcher.batch_size = 10
    claimed = _claim_many(harness, 25)
    harness.transport.failing = True
    report = dispatcher.run_once(include_deferred=True)
    assert sorted(t for t, _ in report.failed) == sorted(claimed)
    assert report.delivered == ()
    assert harness.transport.attempts == 25 * 3
    horizon = harness.clock.now() + timedelta(days=1)
    assert len(harness.tracker.pending_triggers(horizon, 100)) == 25


def test_a_plain_pass_over_a_receiver_that_is_down_tries_each_trigger_once(
    harness: Harness,
) -> None:
    """45 due triggers, pages of 10, every delivery failing (each page's retries take
    long enough for the first failures to be due again): the pass ends, having tried
    each trigger once; what came due again waits for a later pass."""
    dispatcher = harness.runtime.dispatcher
    dispatcher.batch_size = 10
    dispatcher.redelivery_base = dispatcher.redelivery_max = 1.0  # due again at once
    claimed = _claim_many(harness, 45)
    harness.transport.failing = True
    report = dispatcher.run_once()
    tried = [trigger_id for trigger_id, _ in report.failed]
    assert len(tried) == len(set(tried))
    assert set(tried) <= set(claimed)
    assert harness.transport.attempts == len(tried) * 3


def test_a_plain_pass_takes_at_most_its_page_limit_and_says_more_are_due(
    harness: Harness,
) -> None:
    """A backlog beyond MAX_LEASED_PAGES pages: the pass stops there with ``more`` set
    (the loop runs the next one at once), and the next passes deliver the rest."""
    from phasegate.dispatch import MAX_LEASED_PAGES

    dispatcher = harness.runtime.dispatcher
    dispatcher.batch_size = 2
    backlog = 2 * MAX_LEASED_PAGES + 3
    claimed = _claim_many(harness, backlog)
    first = dispatcher.run_once()
    assert (len(first.delivered), first.more) == (2 * MAX_LEASED_PAGES, True)
    second = dispatcher.run_once()
    assert (len(second.delivered), second.more) == (3, False)
    assert sorted(first.delivered + second.delivered) == sorted(claimed)


def test_the_loop_runs_the_next_pass_at_once_while_more_are_due(harness: Harness) -> None:
    """run_forever does not wait its interval after a pass that stopped at its page
    limit, and looks at its stop flag between the passes."""
    from phasegate.dispatch import MAX_LEASED_PAGES

    dispatcher = harness.runtime.dispatcher
    dispatcher.batch_size = 2
    claimed = _claim_many(harness, 2 * MAX_LEASED_PAGES * 2 + 1)
    stop = threading.Event()
    loop = threading.Thread(target=dispatcher.run_forever, args=(stop, 60.0))
    loop.start()
    try:
        for _ in range(500):
            if len(harness.transport.delivered) == len(claimed):
                break
            threading.Event().wait(0.01)
        assert len(harness.transport.delivered) == len(claimed)
    finally:
        stop.set()
        dispatcher.wake()
        loop.join(10)
    assert not loop.is_alive()


def test_a_pass_that_cannot_read_on_says_it_stopped_early(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's pass whose second read of the outbox fails: what it delivered is
    reported, and the report is not ``ok`` (``unfinished`` says why)."""
    from phasegate.errors import BothStoresFailed

    dispatcher = harness.runtime.dispatcher
    dispatcher.batch_size = 10
    _claim_many(harness, 25)
    reads = [0]
    real = harness.tracker.pending_triggers

    def second_fails(now: Any, limit: int) -> Any:
        reads[0] += 1
        if reads[0] == 2:
            raise BothStoresFailed("read pending triggers", OSError("gone"), OSError("gone"))
        return real(now, limit)

    monkeypatch.setattr(harness.tracker, "pending_triggers", second_fails)
    report = dispatcher.run_once(include_deferred=True)
    assert len(report.delivered) == 10
    assert not report.ok
    assert report.unfinished is not None
    assert "reading the outbox failed" in report.unfinished
