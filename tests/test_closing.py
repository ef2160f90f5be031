"""Closing a runtime while reports are being recorded: the calls under way finish first
(a claim they made reaches the backup and is announced), bounded, without waiting for
calls begun afterwards or for the closing thread's own."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from phasegate.events import Event, EventKind
from phasegate.model import trigger_id_for
from support import Harness, hold_writer

RUN = "2026-01-28"


def _timed_close(harness: Harness, **timeouts: float) -> float:
    started = time.monotonic()
    harness.runtime.close(**timeouts)
    return time.monotonic() - started


def test_a_close_under_steady_traffic_waits_only_for_the_calls_under_way(
    harness: Harness,
) -> None:
    """Eight threads keep recording: there is always a call under way, so waiting for
    none would wait out the whole drain timeout on every close under traffic."""
    stop = threading.Event()

    def keep_recording(thread: int) -> None:
        day = 0
        while not stop.is_set():
            day += 1
            try:
                harness.complete("extract", "api", run_key=f"{2000 + thread}-01-{day % 28 + 1:02d}")
            except Exception:  # a call begun after the close met the closed stores
                return

    threads = [threading.Thread(target=keep_recording, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    took = _timed_close(harness, write_drain_timeout=30)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert took < 10, f"close took {took:.1f}s"


def test_a_close_from_a_listener_inside_a_record_call_does_not_wait_for_it(
    harness: Harness,
) -> None:
    """A listener of ``trigger_claimed`` closing the runtime runs inside the very record
    call that would be waited for."""
    took: list[float] = []

    def close_on_claim(event: Event) -> None:
        if event.kind is EventKind.TRIGGER_CLAIMED and not took:
            took.append(_timed_close(harness, write_drain_timeout=30))

    harness.runtime.events.subscribe(close_on_claim)
    harness.complete("extract", "api")
    harness.complete("extract", "files")
    assert took
    assert took[0] < 10, f"close took {took[0]:.1f}s"


def test_a_cancelled_callers_claim_is_announced_before_the_transport_closes(
    harness: Harness,
) -> None:
    """The follow-up of an ``arecord`` cancelled mid-write runs on the tracker's threads;
    the close finishes them before it closes the alerter and the transport."""
    order: list[str] = []
    real_close = harness.transport.close

    def close_transport() -> None:
        order.append("transport closed")
        real_close()

    harness.transport.close = close_transport  # type: ignore[method-assign]
    harness.runtime.events.subscribe(
        lambda event: order.append("claimed") if event.kind is EventKind.TRIGGER_CLAIMED else None
    )
    harness.complete("extract", "api")
    last = harness.orchestrator.validate("extract", RUN, "files")
    release = hold_writer(harness.tracker.backup)

    async def cancel_after_the_primary_claimed() -> None:
        task = asyncio.ensure_future(harness.orchestrator.arecord([last]))
        while not harness.tracker.primary.triggers(RUN):
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(cancel_after_the_primary_claimed())
    closer = threading.Thread(target=harness.runtime.close)
    closer.start()
    time.sleep(0.2)
    release.set()
    closer.join(20)
    assert not closer.is_alive()
    assert order == ["claimed", "transport closed"]
    backup = harness.tracker.backup.triggers(RUN)
    assert [e.trigger.trigger_id for e in backup] == [trigger_id_for("orders", "extract", RUN)]


def test_a_write_settled_twice_is_retried_once(harness: Harness) -> None:
    """An ``arecord`` cancelled while its failed backup write is retried on a thread: the
    follow-up waits for that retry's outcome instead of retrying again (twice the
    retries, twice the breaker's failures)."""
    harness.complete("extract", "api")
    backup = harness.tracker.backup
    real = backup.record_completions
    retries: list[int] = []
    retrying, release = threading.Event(), threading.Event()

    def retried(completions: Any) -> Any:
        retries.append(1)
        retrying.set()
        release.wait(10)
        return real(completions)

    backup.record_completions = retried  # type: ignore[method-assign]
    last = harness.orchestrator.validate("extract", RUN, "files")
    harness.backup_fault.fail()

    async def cancel_during_the_retry() -> None:
        task = asyncio.ensure_future(harness.orchestrator.arecord([last]))
        while not retrying.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        harness.backup_fault.heal()
        release.set()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(cancel_during_the_retry())
    harness.runtime.close()  # the follow-up finished
    assert retries == [1]
    assert [e.trigger.trigger_id for e in backup.triggers(RUN)] == [
        trigger_id_for("orders", "extract", RUN)
    ]
