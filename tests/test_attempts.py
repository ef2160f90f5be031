"""Attempts and fan-in readiness from the outbox: a phase is named ready once per attempt."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phasegate.attempts import RunAttempts
from phasegate.graph import PhaseGraph
from phasegate.model import (
    OutboxEntry,
    Trigger,
    TriggerReason,
    rerun_signal_id_for,
    start_signal_id_for,
    trigger_id_for,
)

RUN = "2026-01-28"
T0 = datetime(2026, 1, 28, tzinfo=UTC)
DIAMOND = PhaseGraph.build([("a", ["b", "c"]), ("b", ["d"]), ("c", ["d"]), ("d", [])])
WIDE = PhaseGraph.build(
    [("a", ["b", "c", "e"]), ("b", ["d"]), ("c", ["d"]), ("e", ["d"]), ("d", ["f"]), ("f", [])]
)


@dataclass
class Outbox:
    """A compare-and-set outbox in memory, with a tick per claim for ``claimed_at``."""

    graph: PhaseGraph
    entries: dict[str, OutboxEntry] = field(default_factory=dict)
    namings: Counter[tuple[str, int]] = field(default_factory=Counter)

    def read(self) -> RunAttempts:
        return RunAttempts.from_triggers(self.graph, RUN, list(self.entries.values()))

    def claim(self, trigger: Trigger) -> bool:
        if trigger.trigger_id in self.entries:
            return False
        at = T0 + timedelta(seconds=len(self.entries))
        self.entries[trigger.trigger_id] = OutboxEntry(trigger, claimed_at=at)
        return True


def hand_on(outbox: Outbox, phase: str) -> Trigger | None:
    """Build the trigger of ``phase`` as the orchestrator does, from a read before the claim."""
    state = outbox.read()
    if state.triggered(phase):
        return None
    attempt = state.attempt(phase)
    return Trigger(
        trigger_id=trigger_id_for("p", phase, RUN, attempt),
        pipeline="p",
        phase=phase,
        next_phase=None,
        run_key=RUN,
        reason=TriggerReason.COMPLETE,
        triggered_at=T0,
        attempt=attempt,
        next_phases=outbox.graph.downstream(phase),
        ready_phases=state.ready_in_trigger_of(phase),
    )


def announce(outbox: Outbox) -> list[Trigger]:
    """The ``ready`` start signals a read after a claim calls for."""
    state = outbox.read()
    return [
        Trigger.start_signal("p", phase, RUN, state.attempt(phase), TriggerReason.READY, T0)
        for phase in state.unannounced_ready()
    ]


def rerun(outbox: Outbox, phase: str) -> Trigger | None:
    """Build the rerun signal of ``phase`` (none while the same rerun is still open)."""
    state = outbox.read()
    if state.pending_rerun(phase) is not None:
        return None
    return Trigger.start_signal(
        "p",
        phase,
        RUN,
        state.attempt(phase) + 1,
        TriggerReason.RERUN,
        T0,
        trigger_id=rerun_signal_id_for("p", RUN, len(state.reruns) + 1),
    )


class Actor:
    """One concurrent caller, advanced one step (read or claim) at a time."""

    def __init__(self, outbox: Outbox, kind: str, phase: str) -> None:
        self.outbox, self.kind, self.phase = outbox, kind, phase
        self.steps = self._run()

    def step(self) -> bool:
        return next(self.steps, None) is not None

    def _run(self) -> Iterator[str]:
        outbox = self.outbox
        if self.kind == "rerun":
            while True:
                signal = rerun(outbox, self.phase)
                yield "read"
                if signal is None:
                    return
                if outbox.claim(signal):
                    outbox.namings[(signal.phase, signal.attempt)] += 1
                    return
        trigger = hand_on(outbox, self.phase)
        believed = {d: outbox.read().attempt(d) for d in outbox.graph.downstream(self.phase)}
        yield "read"
        if trigger is None or not outbox.claim(trigger):
            return
        now = outbox.read()
        for target in trigger.ready_phases or ():
            if now.attempt(target) == believed[target]:
                outbox.namings[(target, believed[target])] += 1
        yield "claimed"
        signals = announce(outbox)
        yield "read again"
        for signal in signals:
            if outbox.claim(signal):
                outbox.namings[(signal.phase, signal.attempt)] += 1
            yield "announced"


def check_once_per_attempt(outbox: Outbox) -> None:
    """No phase-run is named ready twice; every ready phase-run is named exactly once."""
    assert all(count == 1 for count in outbox.namings.values()), outbox.namings
    final = outbox.read()
    for phase in outbox.graph.order:
        if final.upstream_done(phase):
            assert outbox.namings[(phase, final.attempt(phase))] == 1, (phase, outbox.namings)


def test_the_last_upstream_trigger_names_the_fan_in_phase_ready() -> None:
    """b then c, one after the other: c's trigger carries ready_phases [d]; no extra signal."""
    outbox = Outbox(DIAMOND)
    for phase in ("a", "b", "c"):
        trigger = hand_on(outbox, phase)
        assert trigger is not None
        assert outbox.claim(trigger)
        assert announce(outbox) == []
    state = outbox.read()
    assert state.trigger("a") is not None
    assert state.trigger("a").trigger.ready_phases == ("b", "c")  # type: ignore[union-attr]
    assert state.trigger("b").trigger.ready_phases == ()  # type: ignore[union-attr]
    assert state.trigger("c").trigger.ready_phases == ("d",)  # type: ignore[union-attr]
    assert state.started_at("d") == state.trigger("c").claimed_at  # type: ignore[union-attr]
    assert state.unannounced_ready() == ()


def test_two_upstream_phases_triggering_at_once_start_the_fan_in_with_one_ready_signal() -> None:
    """b and c read before either claims: neither names d; both ask, one ready signal wins."""
    outbox = Outbox(DIAMOND)
    first = hand_on(outbox, "a")
    assert first is not None
    outbox.claim(first)
    b, c = hand_on(outbox, "b"), hand_on(outbox, "c")
    assert b is not None
    assert c is not None
    assert (b.ready_phases, c.ready_phases) == ((), ())
    assert outbox.claim(b)
    assert outbox.claim(c)
    signals = announce(outbox) + announce(outbox)
    assert [s.trigger_id for s in signals] == [start_signal_id_for("p", "d", RUN, 1)] * 2
    assert [outbox.claim(s) for s in signals] == [True, False]
    assert signals[0].reason is TriggerReason.READY
    assert outbox.read().unannounced_ready() == ()


def test_a_rerun_opens_the_next_attempt_of_the_phase_and_everything_downstream() -> None:
    """Rerunning b makes b and d attempt 2; a and c stay at 1; asking again changes nothing."""
    outbox = Outbox(DIAMOND)
    for phase in ("a", "b", "c"):
        trigger = hand_on(outbox, phase)
        assert trigger is not None
        outbox.claim(trigger)
    signal = rerun(outbox, "b")
    assert signal is not None
    assert outbox.claim(signal)
    state = outbox.read()
    assert {p: state.attempt(p) for p in DIAMOND.order} == {"a": 1, "b": 2, "c": 1, "d": 2}
    assert not state.triggered("b")
    assert state.triggered("c")
    assert state.pending_rerun("b") is not None
    assert rerun(outbox, "b") is None
    assert not state.aligned("d")
    again = hand_on(outbox, "b")
    assert again is not None
    assert again.trigger_id == trigger_id_for("p", "b", RUN, 2)
    assert again.ready_phases == ()
    outbox.claim(again)
    [ready] = announce(outbox)
    assert (ready.phase, ready.attempt, ready.reason) == ("d", 2, TriggerReason.READY)


PLANS = st.lists(
    st.tuples(st.sampled_from(["trigger", "trigger", "rerun"]), st.integers(0, 5)),
    min_size=1,
    max_size=12,
)


@pytest.mark.parametrize("graph", [DIAMOND, WIDE], ids=["diamond", "wide"])
@settings(max_examples=200, deadline=None)
@given(plan=PLANS, seed=st.integers(0, 2**32 - 1))
def test_any_interleaving_names_each_ready_phase_run_exactly_once(
    graph: PhaseGraph, plan: list[tuple[str, int]], seed: int
) -> None:
    """Concurrent triggers and reruns in any order: every ready phase-run is named once."""
    outbox = Outbox(graph)
    steps = [(kind, graph.order[index % len(graph.order)]) for kind, index in plan]
    # Every phase triggers once more at the end, so the run reaches quiescence.
    steps += [("trigger", phase) for phase in graph.order]
    actors = [Actor(outbox, kind, phase) for kind, phase in steps]
    order = random.Random(seed)
    live = list(range(len(actors)))
    while live:
        index = order.choice(live)
        if not actors[index].step():
            live.remove(index)
    check_once_per_attempt(outbox)
