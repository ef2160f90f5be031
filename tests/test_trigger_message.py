"""The trigger message: every documented key, fan-out fields, start signals, round trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from phasegate.model import (
    Trigger,
    TriggerReason,
    rerun_signal_id_for,
    start_signal_id_for,
    trigger_id_for,
)

AT = datetime(2026, 1, 28, 19, 30, tzinfo=UTC)
MESSAGE_KEYS = {
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


def fan_out(ready: tuple[str, ...] = ("b",), attempt: int = 1) -> Trigger:
    """The trigger of ``a`` in a → b, c → d."""
    return Trigger(
        trigger_id=trigger_id_for("diamond", "a", "2026-01-28", attempt),
        pipeline="diamond",
        phase="a",
        next_phase=None,
        run_key="2026-01-28",
        reason=TriggerReason.COMPLETE,
        triggered_at=AT,
        correlation_id="corr-1",
        processors=("extract",),
        attempt=attempt,
        next_phases=("b", "c"),
        ready_phases=ready,
    )


def test_the_message_has_exactly_the_documented_keys() -> None:
    """Every field of before, plus ``next_phases`` and ``ready_phases``; nothing else."""
    message = fan_out().to_message()
    assert set(message) == MESSAGE_KEYS
    assert message["next_phase"] == "b"
    assert message["next_phases"] == ["b", "c"]
    assert message["ready_phases"] == ["b"]
    assert message["attempt"] == 1
    assert message["triggered_at"] == "2026-01-28T19:30:00Z"


@pytest.mark.parametrize("ready", [(), ("b",), ("b", "c")])
@pytest.mark.parametrize("attempt", [1, 3])
def test_a_message_round_trips_through_json(ready: tuple[str, ...], attempt: int) -> None:
    """``from_message(json(to_message()))`` gives back the same trigger, empty ready included."""
    trigger = fan_out(ready, attempt)
    assert Trigger.from_message(json.loads(trigger.to_json())) == trigger


def test_a_message_stored_before_fan_out_reads_as_a_straight_line() -> None:
    """An outbox row written by an earlier release (no attempt, next_phases, ready_phases)."""
    old = {
        "trigger_id": trigger_id_for("p", "phase2", "2026-01-28"),
        "pipeline": "p",
        "phase": "phase2",
        "next_phase": "phase3",
        "run_key": "2026-01-28",
        "reason": "complete",
        "correlation_id": None,
        "processors": ["a"],
        "missing": [],
        "triggered_at": "2026-01-28T19:30:00Z",
    }
    trigger = Trigger.from_message(old)
    assert (trigger.next_phases, trigger.ready_phases, trigger.attempt) == (
        ("phase3",),
        ("phase3",),
        1,
    )
    last = Trigger.from_message({**old, "next_phase": None})
    assert (last.next_phases, last.ready_phases, last.to_message()["ready_phases"]) == ((), (), [])


def test_next_phase_and_next_phases_agree_whichever_is_given() -> None:
    """Code that sets only ``next_phase`` (or only ``next_phases``) gets a consistent message."""
    old_style = Trigger("id", "p", "a", "b", "k", TriggerReason.MANUAL, AT)
    assert (old_style.next_phases, old_style.ready_phases) == (("b",), ("b",))
    new_style = fan_out(ready=())
    assert new_style.next_phase == "b"
    assert new_style.ready_phases == ()


def test_a_start_signal_starts_its_own_phase_under_its_own_id() -> None:
    """A rerun's start signal: ready_phases [P], the new attempt, an id no trigger shares."""
    signal = Trigger.start_signal("diamond", "b", "2026-01-28", 2, TriggerReason.RERUN, AT)
    message = signal.to_message()
    assert set(message) == MESSAGE_KEYS
    assert (message["phase"], message["next_phases"], message["ready_phases"]) == (
        "b",
        ["b"],
        ["b"],
    )
    assert (message["reason"], message["attempt"]) == ("rerun", 2)
    assert signal.is_start_signal
    assert signal.trigger_id == start_signal_id_for("diamond", "b", "2026-01-28", 2)
    again = Trigger.start_signal("diamond", "b", "2026-01-28", 2, TriggerReason.RERUN, AT)
    assert again.trigger_id == signal.trigger_id
    others = {
        trigger_id_for("diamond", "b", "2026-01-28", 2),
        trigger_id_for("diamond", "b", "2026-01-28", 1),
        start_signal_id_for("diamond", "b", "2026-01-28", 3),
        start_signal_id_for("diamond", "b", "2026-01-29", 2),
    }
    assert signal.trigger_id not in others
    assert Trigger.from_message(json.loads(signal.to_json())) == signal


def test_only_rerun_and_backfill_make_start_signals() -> None:
    """A start signal with reason ``complete`` is a programming error, refused by name."""
    with pytest.raises(ValueError, match="rerun, backfill or ready, not complete"):
        Trigger.start_signal("p", "a", "k", 1, TriggerReason.COMPLETE, AT)
    assert not fan_out().is_start_signal


def test_reruns_of_a_run_are_numbered_under_ids_of_their_own() -> None:
    """The k-th rerun of a run has one id, whatever phase it reruns, unlike any other id."""
    first = rerun_signal_id_for("diamond", "2026-01-28", 1)
    assert first == rerun_signal_id_for("diamond", "2026-01-28", 1)
    assert first != rerun_signal_id_for("diamond", "2026-01-28", 2)
    assert first != rerun_signal_id_for("diamond", "2026-01-29", 1)
    assert first != start_signal_id_for("diamond", "b", "2026-01-28", 2)
    signal = Trigger.start_signal(
        "diamond", "b", "2026-01-28", 2, TriggerReason.RERUN, AT, trigger_id=first
    )
    assert (signal.trigger_id, signal.attempt, signal.ready_phases) == (first, 2, ("b",))


@pytest.mark.parametrize(
    "text",
    [
        "".join(chr(i) for i in range(128)),  # every ASCII character, controls and DEL
        "2026-01-28",
        "café ☕ \u2028 \U0001f600",
        'quote " backslash \\ slash /',
    ],
    ids=["ascii", "plain", "non-ascii", "escapes"],
)
def test_the_message_json_is_byte_for_byte_what_json_dumps_writes(text: str) -> None:
    """The fast encoding of the message (orjson) writes exactly the text ``json`` writes,
    so messages stored or sent before and after it compare equal as text."""
    trigger = Trigger(
        trigger_id=trigger_id_for("p", "a", text),
        pipeline="p",
        phase="a",
        next_phase="b",
        run_key=text,
        reason=TriggerReason.COMPLETE,
        triggered_at=AT,
        correlation_id=text,
        processors=(text, "x"),
    )
    assert trigger.to_json() == json.dumps(trigger.to_message(), separators=(",", ":"))
