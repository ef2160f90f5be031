"""Backfills: send the start signal of one phase for every run key of a range, once each.

Each signal has reason ``backfill``, ``ready_phases`` ``[phase]`` and the deterministic
start id of the phase-run (:func:`~phasegate.model.start_signal_id_for`), and is
claimed like any trigger. The claims are the progress: running the same backfill
again claims nothing new, and one interrupted half-way resumes where it stopped. A
run key whose phase already started at its current attempt (its upstream phases
triggered it, a processor reported, a rerun or an earlier backfill started it) is
skipped, so a backfill never starts a phase-run twice. ``rate`` spaces the signals
sent (not the keys skipped) to spare the systems they start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phasegate.errors import ValidationError
from phasegate.model import Trigger, TriggerReason

if TYPE_CHECKING:
    from phasegate.orchestrator import Orchestrator

MAX_KEYS = 100_000


class Outcome(StrEnum):
    """What a backfill did for one run key."""

    EMITTED = "emitted"
    ALREADY_EMITTED = "already_emitted"
    ALREADY_STARTED = "already_started"
    DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class BackfillItem:
    """One run key of a backfill: what happened and under which start signal."""

    run_key: str
    outcome: Outcome
    trigger_id: str | None
    attempt: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "run_key": self.run_key,
            "outcome": self.outcome.value,
            "trigger_id": self.trigger_id,
            "attempt": self.attempt,
        }


@dataclass(frozen=True, slots=True)
class BackfillReport:
    """Every run key of a backfill, in order."""

    phase: str
    items: tuple[BackfillItem, ...]

    def count(self, outcome: Outcome) -> int:
        """How many run keys ended with ``outcome``."""
        return sum(1 for item in self.items if item.outcome is outcome)

    @property
    def complete(self) -> bool:
        """Every run key has its phase started (no claim was deferred)."""
        return self.count(Outcome.DEFERRED) == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as ``phasegate backfill --format json`` prints it."""
        return {
            "phase": self.phase,
            "run_keys": len(self.items),
            **{outcome.value: self.count(outcome) for outcome in Outcome},
            "items": [item.to_dict() for item in self.items],
        }


def days_between(first: str, last: str) -> list[str]:
    """Every date from ``first`` to ``last`` (``YYYY-MM-DD``, both included)."""
    try:
        start, end = date.fromisoformat(first), date.fromisoformat(last)
    except ValueError as exc:
        raise ValidationError(
            "from", f"--from and --to must be dates (YYYY-MM-DD) unless --keys is given: {exc}"
        ) from None
    if end < start:
        raise ValidationError("to", f"{last} is before {first}")
    count = (end - start).days + 1
    if count > MAX_KEYS:
        raise ValidationError("to", f"{count} days; at most {MAX_KEYS} run keys per backfill")
    return [(start + timedelta(days=offset)).isoformat() for offset in range(count)]


def read_run_keys(path: str | Path) -> list[str]:
    """Run keys from a file, one per line; blank lines and ``#`` comments are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValidationError("keys", f"cannot read {path}: {exc.strerror}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if len(keys) > MAX_KEYS:
        raise ValidationError("keys", f"{len(keys)} run keys; at most {MAX_KEYS} per backfill")
    return list(dict.fromkeys(keys))


def parse_rate(text: str) -> float:
    """``"5/s"``, ``"30/m"``, ``"100/h"`` or a bare number (per second) → signals per second."""
    number, _, unit = text.strip().partition("/")
    per = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit.strip())
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if per is None or value <= 0:
        raise ValidationError("rate", f"{text!r}; expected e.g. 5/s, 30/m or 100/h")
    return value / per


class Backfill:
    """Sends the start signal of ``phase`` for each of ``run_keys``; :meth:`run` does it.

    ``rate`` is signals per second (``None``: as fast as the store allows);
    ``deliver`` is called with each signal claimed (the CLI delivers it at once, so
    the rate holds downstream); ``progress`` with each item as it is decided.
    """

    def __init__(
        self,
        orchestrator: Orchestrator,
        phase: str,
        run_keys: Iterable[str],
        *,
        rate: float | None = None,
        sleep: Callable[[float], None] | None = None,
        deliver: Callable[[Trigger], object] | None = None,
        progress: Callable[[BackfillItem], None] | None = None,
    ) -> None:
        pipeline = orchestrator.pipeline
        pipeline.phase(phase)
        self.run_keys = [pipeline.validate_run_key(key) for key in run_keys]
        self.orchestrator = orchestrator
        self.phase = phase
        self.interval = 1.0 / rate if rate else 0.0
        self._sleep = sleep or orchestrator.clock.sleep
        self._deliver = deliver
        self._progress = progress
        self._next_at: float | None = None

    def run(self) -> BackfillReport:
        """Go through every run key once; safe to run again, or after an interruption."""
        return BackfillReport(self.phase, tuple(self.items()))

    def items(self) -> Iterator[BackfillItem]:
        """Decide each run key in turn (lazily: an interruption stops between keys)."""
        for run_key in self.run_keys:
            item = self._one(run_key)
            if self._progress is not None:
                self._progress(item)
            yield item

    def _one(self, run_key: str) -> BackfillItem:
        orchestrator = self.orchestrator
        status = orchestrator.phase_status(self.phase, run_key)
        signal = status.start_signal
        if signal is not None and signal.trigger.reason is TriggerReason.BACKFILL:
            return BackfillItem(
                run_key, Outcome.ALREADY_EMITTED, signal.trigger.trigger_id, status.attempt
            )
        if signal is not None or status.started_at is not None or status.trigger is not None:
            return BackfillItem(run_key, Outcome.ALREADY_STARTED, None, status.attempt)
        self._wait_turn()
        result = orchestrator.claim_start_signal(
            Trigger.start_signal(
                orchestrator.pipeline.name,
                self.phase,
                run_key,
                status.attempt,
                TriggerReason.BACKFILL,
                orchestrator.clock.now(),
            )
        )
        trigger_id = result.trigger.trigger_id
        if result.deferred:
            return BackfillItem(run_key, Outcome.DEFERRED, None, status.attempt)
        if not result.claimed:
            return BackfillItem(run_key, Outcome.ALREADY_EMITTED, trigger_id, status.attempt)
        if self._deliver is not None:
            self._deliver(result.trigger)
        return BackfillItem(run_key, Outcome.EMITTED, trigger_id, status.attempt)

    def _wait_turn(self) -> None:
        if not self.interval:
            return
        clock = self.orchestrator.clock
        now = clock.monotonic()
        if self._next_at is not None and self._next_at > now:
            self._sleep(self._next_at - now)
            now = self._next_at
        self._next_at = now + self.interval
