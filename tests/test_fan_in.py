"""Fan-out, fan-in and optional processors through the real orchestrator and stores."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from phasegate.events import EventKind
from phasegate.model import PhaseState, Trigger, TriggerReason, trigger_id_for
from phasegate.testing import FakeClock
from phasegate.timeouts import check_timeouts
from rigs import MemoryRig
from support import Harness

RUN = "2026-01-28"
DIAMOND = """
[pipeline]
name = "diamond"

[[phases]]
name = "a"
processors = ["extract"]
next = ["b", "c"]

[[phases]]
name = "b"
processors = ["clean"]
next = "d"

[[phases]]
name = "c"
processors = ["enrich"]
optional = ["audit"]
next = "d"
timeout = "1h"

[[phases]]
name = "d"
processors = ["publish", "archive"]
"""


@pytest.fixture(params=["sqlite", "memory"])
def diamond(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[Harness | MemoryRig]:
    """A runtime of the diamond a → b, c → d on fresh SQLite or in-memory stores."""
    rig = (
        Harness(tmp_path, clock, text=DIAMOND)
        if request.param == "sqlite"
        else MemoryRig(clock, text=DIAMOND)
    )
    yield rig
    rig.runtime.close()


def delivered(rig: Harness | MemoryRig) -> list[Trigger]:
    """Every message delivered so far, after one dispatcher pass."""
    rig.runtime.dispatcher.run_once()
    return rig.transport.delivered


def started(messages: list[Trigger], phase: str) -> list[Trigger]:
    """The messages that tell a runner to start ``phase``."""
    return [m for m in messages if phase in (m.ready_phases or ())]


def test_a_diamond_starts_d_once_after_both_b_and_c(
    diamond: Harness | MemoryRig, clock: FakeClock
) -> None:
    """a names b and c ready; b names nothing; c, triggering last, names d; d starts then."""
    diamond.complete("a", "extract")
    clock.advance(60)
    diamond.complete("b", "clean")
    clock.advance(60)
    assert diamond.orchestrator.phase_status("d", RUN).state is PhaseState.NOT_STARTED
    diamond.complete("c", "enrich")
    messages = {m.phase: m for m in delivered(diamond)}
    assert messages["a"].to_message()["next_phases"] == ["b", "c"]
    assert messages["a"].to_message()["ready_phases"] == ["b", "c"]
    assert (messages["b"].next_phases, messages["b"].ready_phases) == (("d",), ())
    assert (messages["c"].next_phases, messages["c"].ready_phases) == (("d",), ("d",))
    assert messages["c"].next_phase == "d"
    assert all(m.attempt == 1 for m in messages.values())
    assert messages["c"].trigger_id == trigger_id_for("diamond", "c", RUN)
    d = diamond.orchestrator.phase_status("d", RUN)
    c_claim = diamond.orchestrator.phase_status("c", RUN).trigger
    assert c_claim is not None
    assert (d.state, d.started_at) == (PhaseState.WAITING, c_claim.claimed_at)
    diamond.complete("d", "publish")
    diamond.complete("d", "archive")
    last = delivered(diamond)[-1]
    assert (last.phase, last.next_phase, last.next_phases, last.ready_phases) == ("d", None, (), ())
    assert [m.phase for m in started(delivered(diamond), "d")] == ["c"]


def test_b_and_c_completing_at_once_start_d_exactly_once(diamond: Harness | MemoryRig) -> None:
    """Many concurrent duplicate reports of b and c: one message, of any kind, starts d."""
    diamond.complete("a", "extract")
    barrier = threading.Barrier(16)

    def report(phase: str, processor: str) -> None:
        barrier.wait()
        diamond.complete(phase, processor)

    threads = [
        threading.Thread(target=report, args=("b", "clean") if i % 2 else ("c", "enrich"))
        for i in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    diamond.orchestrator.sweep()
    messages = delivered(diamond)
    assert len(started(messages, "d")) == 1
    [signal] = started(messages, "d")
    assert signal.reason in {TriggerReason.COMPLETE, TriggerReason.READY}
    assert len([m for m in messages if m.phase in {"b", "c"}]) == 2


def test_optional_processors_do_not_hold_a_phase_back(diamond: Harness | MemoryRig) -> None:
    """c triggers without its optional ``audit``; status shows it missing apart, then late."""
    diamond.complete("a", "extract")
    result = diamond.complete("c", "enrich")
    assert result.claimed
    status = diamond.orchestrator.phase_status("c", RUN)
    assert status.to_dict()["optional"] == ["audit"]
    assert (status.missing, status.optional_missing) == ((), ("audit",))
    late = diamond.complete("c", "audit", metadata={"rows": 3})
    assert (late.claimed, late.trigger_id) == (False, result.trigger_id)
    after = diamond.orchestrator.phase_status("c", RUN)
    assert after.succeeded == ("enrich", "audit")
    assert after.optional_missing == ()


def test_an_unknown_processor_lists_the_optional_ones_too(diamond: Harness | MemoryRig) -> None:
    """The rejection names every processor the phase accepts, required then optional."""
    with pytest.raises(Exception, match="expected one of: enrich, audit"):
        diamond.complete("c", "ghost")


def test_the_timeout_alert_lists_missing_required_and_optional_apart(
    diamond: Harness | MemoryRig, clock: FakeClock
) -> None:
    """c times out: the alert names the required processor missing and the optional one."""
    diamond.complete("a", "extract")
    clock.advance(2 * 3600)
    [finding] = check_timeouts(diamond.orchestrator)
    assert finding.report.missing == ("enrich",)
    [event] = diamond.events_of(EventKind.PHASE_TIMED_OUT)
    assert "missing: enrich; optional, not reported: audit" in event.message
    assert event.details["optional_missing"] == ["audit"]
