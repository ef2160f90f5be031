"""Where each phase of one run stands across attempts and fan-in, read from its outbox.

The claimed triggers of a run are the record of truth; nothing else is stored:

- A rerun of phase P claims a *start signal* (reason ``rerun``) for P at attempt N+1.
  It opens a new attempt of P and of every phase downstream of P, so the **current
  attempt** of a phase is 1 plus the number of rerun signals of it or of any phase
  upstream of it.
- A phase has **triggered** when a trigger handing it on (reason ``complete``,
  ``timeout`` or ``manual``) is claimed at its current attempt.
- A phase is **ready** once every upstream phase has triggered at its current
  attempt. Exactly one message names it ready (in ``ready_phases``), so a runner
  starts it once:

  * usually the trigger of the upstream phase that triggered last: it names the
    phase when, read just before its claim, every other upstream phase had
    triggered;
  * when two upstream phases trigger at the same moment, neither read sees the other
    and neither names it. Each claimer reads again after its claim; the later one
    sees both and claims a start signal (reason ``ready``) for the phase, under the
    phase-run's deterministic start id, so a third party racing it changes nothing;
  * after a rerun of one branch of a fan-in, the other branch's trigger named the
    phase ready for the *earlier* attempt, and a message cannot say for which
    attempt it named it. Such a phase (not *aligned*, below) is never named by a
    trigger: its readiness is always the ``ready`` start signal, claimed by whoever
    first sees every upstream phase triggered.

A phase is *aligned* when every rerun that opened one of its attempts (other than a
rerun of the phase itself) also opened a new attempt of each of its upstream phases:
then the current trigger of each upstream phase was built after the phase's current
attempt opened, and naming it there is unambiguous. Without reruns every phase is
aligned. A phase already started at its current attempt by a start signal (a rerun,
a backfill, a ``ready`` signal) is never named ready again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from phasegate.graph import PhaseGraph
from phasegate.model import OutboxEntry, TriggerReason


@dataclass(frozen=True, slots=True)
class RunAttempts:
    """The attempts, triggers and start signals of every phase of one run."""

    graph: PhaseGraph
    run_key: str
    current: Mapping[str, int]
    handed_on: Mapping[str, OutboxEntry]
    started: Mapping[str, OutboxEntry]
    reruns: tuple[OutboxEntry, ...]

    @classmethod
    def from_triggers(
        cls, graph: PhaseGraph, run_key: str, entries: Sequence[OutboxEntry]
    ) -> RunAttempts:
        """Read the claimed triggers of ``run_key`` (any order, any phase)."""
        reruns = tuple(
            entry
            for entry in entries
            if entry.trigger.reason is TriggerReason.RERUN and entry.trigger.phase in graph.links
        )
        current = (
            {
                phase: 1 + sum(1 for entry in reruns if _affects(graph, entry.trigger.phase, phase))
                for phase in graph.order
            }
            if reruns
            else dict.fromkeys(graph.order, 1)
        )
        handed_on: dict[str, OutboxEntry] = {}
        started: dict[str, OutboxEntry] = {}
        for entry in entries:
            trigger = entry.trigger
            if current.get(trigger.phase) != trigger.attempt:
                continue
            target = started if trigger.is_start_signal else handed_on
            target.setdefault(trigger.phase, entry)
        return cls(graph, run_key, current, handed_on, started, reruns)

    @property
    def has_reruns(self) -> bool:
        """Whether any phase of this run was ever rerun."""
        return bool(self.reruns)

    def attempt(self, phase: str) -> int:
        """The current attempt of ``phase`` (1 unless it or an upstream phase was rerun)."""
        return self.current[phase]

    def trigger(self, phase: str) -> OutboxEntry | None:
        """The trigger handing ``phase`` on at its current attempt, if claimed."""
        return self.handed_on.get(phase)

    def start_signal(self, phase: str) -> OutboxEntry | None:
        """The start signal of ``phase`` at its current attempt, if claimed."""
        return self.started.get(phase)

    def triggered(self, phase: str) -> bool:
        """Whether ``phase`` has triggered at its current attempt."""
        return phase in self.handed_on

    def upstream_done(self, phase: str, *, assuming: str | None = None) -> bool:
        """Whether every upstream phase of ``phase`` has triggered (``assuming`` counts)."""
        upstream = self.graph.upstream(phase)
        return bool(upstream) and all(u == assuming or self.triggered(u) for u in upstream)

    def aligned(self, phase: str) -> bool:
        """Whether a trigger of an upstream phase may name ``phase`` ready (module docs)."""
        upstream = self.graph.upstream(phase)
        for entry in self.reruns:
            source = entry.trigger.phase
            if source == phase or not _affects(self.graph, source, phase):
                continue
            if not all(_affects(self.graph, source, u) for u in upstream):
                return False
        return True

    def ready_in_trigger_of(self, phase: str) -> tuple[str, ...]:
        """The phases the trigger of ``phase``, about to be claimed, names ready."""
        return tuple(
            target
            for target in self.graph.downstream(phase)
            if target not in self.started
            and self.aligned(target)
            and self.upstream_done(target, assuming=phase)
        )

    def unannounced_ready(self) -> tuple[str, ...]:
        """Phases ready at their current attempt that no claimed message names ready.

        Each needs a ``ready`` start signal; its deterministic id makes concurrent
        claimers agree on one.
        """
        found = []
        for phase in self.graph.order:
            if phase in self.started or not self.upstream_done(phase):
                continue
            if self.aligned(phase) and any(
                phase in (self.handed_on[u].trigger.ready_phases or ())
                for u in self.graph.upstream(phase)
            ):
                continue
            found.append(phase)
        return tuple(found)

    def started_at(self, phase: str) -> datetime | None:
        """When ``phase`` started at its current attempt, as far as triggers tell.

        Its start signal, else the moment its last upstream phase triggered; ``None``
        when neither happened (a root phase starts at its first report).
        """
        signal = self.started.get(phase)
        if signal is not None:
            return signal.claimed_at
        if self.upstream_done(phase):
            return max(self.handed_on[u].claimed_at for u in self.graph.upstream(phase))
        return None

    def pending_rerun(self, phase: str) -> OutboxEntry | None:
        """The rerun signal that opened ``phase``'s current attempt, while it has not
        triggered yet: asking for the same rerun again answers with it."""
        signal = self.started.get(phase)
        if signal is None or signal.trigger.reason is not TriggerReason.RERUN:
            return None
        return None if self.triggered(phase) else signal


def _affects(graph: PhaseGraph, source: str, phase: str) -> bool:
    """Whether a rerun of ``source`` opens a new attempt of ``phase``."""
    return source == phase or phase in graph.descendants(source)
