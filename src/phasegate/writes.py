"""What a dual write answers: whether each store took it, and for a batch of completions
each phase-run's successes as the stores answered them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from phasegate.model import Answered, PhaseRun


@dataclass(frozen=True, slots=True)
class DualWriteResult:
    """Which stores accepted a write; unpacks as ``(primary_ok, backup_ok)``."""

    primary_ok: bool
    backup_ok: bool
    primary_error: BaseException | None = None
    backup_error: BaseException | None = None
    primary_value: Any = None
    backup_value: Any = None

    def __iter__(self) -> Any:
        return iter((self.primary_ok, self.backup_ok))

    @property
    def acknowledged(self) -> bool:
        """At least one store holds the record durably."""
        return self.primary_ok or self.backup_ok


@dataclass(frozen=True, slots=True)
class BatchWriteResult(DualWriteResult):
    """A dual-written batch of completions, with each phase-run's merged successes."""

    _merged: dict[PhaseRun, frozenset[str]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def successes(self) -> dict[PhaseRun, frozenset[str]]:
        """Per phase-run in the batch: the processors succeeded in either store (merged
        once; the same mapping on every call, not to be changed)."""
        if self._merged is None:
            object.__setattr__(self, "_merged", self._merge())
        assert self._merged is not None
        return self._merged

    def _merge(self) -> dict[PhaseRun, frozenset[str]]:
        merged: dict[PhaseRun, set[str]] = {}
        for ok, answer in (
            (self.primary_ok, self.primary_value),
            (self.backup_ok, self.backup_value),
        ):
            if ok and answer:
                for run, names in answer.items():
                    merged.setdefault(run, set()).update(names)
        return {run: frozenset(names) for run, names in merged.items()}

    @property
    def followed(self) -> object:
        """What the ``then`` work given with the write returned in the primary's
        transaction (or the error it raised); ``None`` when it did not run."""
        return getattr(self.primary_value, "followed", None) if self.primary_ok else None

    def answers(self) -> dict[PhaseRun, Answered | None]:
        """Per phase-run in the batch: what the stores that took it answered, merged, or
        None where one of them answered only the successes (see :class:`Answered`)."""
        found: dict[PhaseRun, list[frozenset[str]]] = {}
        for ok, answer in (
            (self.primary_ok, self.primary_value),
            (self.backup_ok, self.backup_value),
        ):
            if ok and answer:
                for run, names in answer.items():
                    found.setdefault(run, []).append(names)
        return {run: _merged(answers) for run, answers in found.items()}

    def succeeded_after(self, run: PhaseRun | None = None) -> frozenset[str]:
        """The processors succeeded in ``run`` (default: the batch's only phase-run)."""
        found = self.successes()
        if run is None:
            if len(found) > 1:
                raise ValueError("the batch touched several phase-runs: name one")
            return next(iter(found.values()), frozenset())
        return found.get(run, frozenset())


def _merged(answers: list[frozenset[str]]) -> Answered | None:
    if len(answers) == 1:
        [answer] = answers
        return answer if isinstance(answer, Answered) else None
    if not all(isinstance(answer, Answered) for answer in answers):
        return None
    known = cast(list[Answered], answers)
    succeeded = frozenset().union(*known)
    times = [answer.first_at for answer in known if answer.first_at is not None]
    return Answered(
        succeeded,
        frozenset().union(*(answer.failed for answer in known)) - succeeded,
        min(times, default=None),
    )
