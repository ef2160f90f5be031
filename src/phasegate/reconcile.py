"""Reconciliation: compare the primary and backup stores over a run-key range, report
what differs, and (with repair) copy what is missing into the store that lacks it.

Repair is a merge in both directions through ``import_records``: idempotent, and
``success`` wins over ``failed``. A trigger claimed separately on each store (possible
only during a primary outage, across replicas) cannot be repaired away: it is reported
as a double claim and alerted.

Every outcome is an event (alerted through the bus, or logged when there is none):
differences found are a WARNING with the counts per kind, differences left after a
repair are CRITICAL, a pass that fails (a store down) is a WARNING, and a pass that
ends with the stores in agreement resolves the last two.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.model import Completion, OutboxEntry, RecordSet
from phasegate.stores.base import CompletionStore

log = logging.getLogger(__name__)

FIRST_KEY, LAST_KEY = "", "\U0010ffff"
KINDS = ("completion", "history", "trigger", "execution", "timeout")
T = TypeVar("T")
_LEVELS = {Severity.CRITICAL: logging.CRITICAL, Severity.WARNING: logging.WARNING}


def count_by_kind(differences: Iterable[Difference]) -> dict[str, int]:
    """How many of ``differences`` there are of each kind (every kind listed)."""
    counts = Counter(d.kind for d in differences)
    return {kind: counts.get(kind, 0) for kind in KINDS}


def describe_range(first_run_key: str, last_run_key: str) -> str:
    """``first to last`` for messages, with the open ends named."""
    if not first_run_key and not last_run_key:
        return "no runs"
    first = first_run_key or "the first run"
    last = "the last run" if last_run_key == LAST_KEY else last_run_key
    return f"{first} to {last}"


def _describe_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in counts.items() if n) or "none"


@dataclass(frozen=True, slots=True)
class Difference:
    """One record that is not the same in both stores."""

    kind: str
    key: tuple[str, ...]
    missing_in: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "key": list(self.key),
            "missing_in": self.missing_in,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What differed, what was repaired, and any double claim."""

    first_run_key: str
    last_run_key: str
    differences: tuple[Difference, ...]
    repaired: bool = False
    remaining: tuple[Difference, ...] = ()
    double_claims: tuple[Difference, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        """Differences per kind (before repair)."""
        return count_by_kind(self.differences)

    def remaining_counts(self) -> dict[str, int]:
        """Differences per kind left after the repair."""
        return count_by_kind(self.remaining)

    @property
    def clean(self) -> bool:
        """Nothing differs (any more, after a repair)."""
        left = self.remaining if self.repaired else self.differences
        return not left and not self.double_claims

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``phasegate reconcile --format json``."""
        return {
            "range": [self.first_run_key, self.last_run_key],
            "differences": [d.to_dict() for d in self.differences],
            "counts": self.counts(),
            "repaired": self.repaired,
            "remaining": [d.to_dict() for d in self.remaining],
            "double_claims": [d.to_dict() for d in self.double_claims],
        }


def _index(items: Iterable[T], key: Callable[[T], Hashable]) -> dict[Any, T]:
    return {key(item): item for item in items}


def _diff_side(
    kind: str,
    primary: dict[Any, Any],
    backup: dict[Any, Any],
    same: Callable[[Any, Any], bool],
    describe: Callable[[Any], str],
) -> list[Difference]:
    out = []
    for key in sorted(primary.keys() | backup.keys()):
        label = tuple(str(part) for part in key)
        if key not in backup:
            out.append(Difference(kind, label, "backup", describe(primary[key])))
        elif key not in primary:
            out.append(Difference(kind, label, "primary", describe(backup[key])))
        elif not same(primary[key], backup[key]):
            out.append(
                Difference(
                    kind,
                    label,
                    None,
                    f"primary: {describe(primary[key])}; backup: {describe(backup[key])}",
                )
            )
    return out


def _same_trigger(a: OutboxEntry, b: OutboxEntry) -> bool:
    return a.trigger.trigger_id == b.trigger.trigger_id and a.delivered == b.delivered


def _phase_label(phase: str, attempt: int) -> str:
    """``phase`` for the first attempt, ``phase#N`` for a rerun's attempt N."""
    return phase if attempt == 1 else f"{phase}#{attempt}"


def _completion_key(c: Completion) -> tuple[str, ...]:
    return (_phase_label(c.phase, c.attempt), c.run_key, c.processor)


def diff(primary: RecordSet, backup: RecordSet) -> tuple[list[Difference], list[Difference]]:
    """Differences between two exports, and the double claims among them."""
    differences: list[Difference] = []
    differences += _diff_side(
        "completion",
        _index(primary.completions, _completion_key),
        _index(backup.completions, _completion_key),
        lambda a, b: a.status is b.status and a.occurred_at == b.occurred_at,
        lambda c: f"{c.status.value} at {c.occurred_at.isoformat()}",
    )
    differences += _diff_side(
        "history",
        _index(
            primary.history,
            lambda c: (*_completion_key(c), c.status.value, c.occurred_at.isoformat()),
        ),
        _index(
            backup.history,
            lambda c: (*_completion_key(c), c.status.value, c.occurred_at.isoformat()),
        ),
        lambda _a, _b: True,
        lambda c: c.status.value,
    )
    p_triggers = _index(
        primary.triggers,
        lambda e: (_phase_label(e.trigger.phase, e.trigger.attempt), e.trigger.run_key),
    )
    b_triggers = _index(
        backup.triggers,
        lambda e: (_phase_label(e.trigger.phase, e.trigger.attempt), e.trigger.run_key),
    )
    differences += _diff_side(
        "trigger",
        p_triggers,
        b_triggers,
        _same_trigger,
        lambda e: (
            f"{e.trigger.reason.value} claimed {e.claimed_at.isoformat()}, "
            f"{'delivered' if e.delivered else 'pending'}"
        ),
    )
    double = [
        Difference(
            "trigger",
            (phase, run_key),
            None,
            "claimed separately on each store: "
            f"primary {p_triggers[(phase, run_key)].claimed_at.isoformat()}, "
            f"backup {b_triggers[(phase, run_key)].claimed_at.isoformat()}",
        )
        for phase, run_key in sorted(p_triggers.keys() & b_triggers.keys())
        if p_triggers[(phase, run_key)].claimed_at != b_triggers[(phase, run_key)].claimed_at
        or p_triggers[(phase, run_key)].trigger.reason
        != b_triggers[(phase, run_key)].trigger.reason
    ]
    differences += _diff_side(
        "execution",
        _index(primary.executions, lambda e: (_phase_label(e.phase, e.attempt), e.run_key)),
        _index(backup.executions, lambda e: (_phase_label(e.phase, e.attempt), e.run_key)),
        lambda _a, _b: True,
        lambda e: f"{e.reason.value} after {e.duration_seconds:.0f}s",
    )
    differences += _diff_side(
        "timeout",
        _index(primary.timeouts, lambda t: (_phase_label(t.phase, t.attempt), t.run_key)),
        _index(backup.timeouts, lambda t: (_phase_label(t.phase, t.attempt), t.run_key)),
        lambda _a, _b: True,
        lambda t: f"missing {', '.join(t.missing)}",
    )
    return differences, double


def reconcile(
    primary: CompletionStore,
    backup: CompletionStore,
    first_run_key: str = FIRST_KEY,
    last_run_key: str = LAST_KEY,
    *,
    repair: bool = False,
    events: EventBus | None = None,
) -> ReconcileReport:
    """Compare both stores over ``[first_run_key, last_run_key]``; repair on request.

    The outcome is announced on ``events`` (see the module docstring); a failure is
    announced, then raised.
    """
    try:
        report = _compare(primary, backup, first_run_key, last_run_key, repair, events)
    except Exception as exc:
        announce_failure(exc, describe_range(first_run_key, last_run_key), events)
        raise
    announce_outcome(report, events)
    return report


def _compare(
    primary: CompletionStore,
    backup: CompletionStore,
    first_run_key: str,
    last_run_key: str,
    repair: bool,
    events: EventBus | None,
) -> ReconcileReport:
    primary_records = primary.export_records(first_run_key, last_run_key)
    backup_records = backup.export_records(first_run_key, last_run_key)
    differences, double = diff(primary_records, backup_records)
    for claim in double:
        _announce(
            Event(
                EventKind.DOUBLE_CLAIM,
                Severity.CRITICAL,
                "reconciler",
                f"possible double trigger of {claim.key[0]} for {claim.key[1]}: {claim.detail}; "
                "receivers de-duplicate on the trigger id",
                run_key=claim.key[1],
                phase=claim.key[0],
            ),
            events,
        )
    if not repair or not differences:
        return ReconcileReport(
            first_run_key, last_run_key, tuple(differences), False, (), tuple(double)
        )
    primary.import_records(backup_records)
    backup.import_records(primary_records)
    after, _ = diff(
        primary.export_records(first_run_key, last_run_key),
        backup.export_records(first_run_key, last_run_key),
    )
    # Only what was found and is still there counts as left after repair: writes that
    # landed while the pass ran (live replicas keep writing) are the next pass's business.
    found = {(d.kind, d.key) for d in differences}
    remaining = [d for d in after if (d.kind, d.key) in found]
    log.info(
        "reconciliation repaired %d difference(s); %d remain; %d new since the pass began",
        len(differences) - len(remaining),
        len(remaining),
        len(after) - len(remaining),
    )
    return ReconcileReport(
        first_run_key, last_run_key, tuple(differences), True, tuple(remaining), tuple(double)
    )


def announce_outcome(report: ReconcileReport, events: EventBus | None) -> None:
    """WARNING for differences found, CRITICAL for any left after repair, else resolved."""
    where = describe_range(report.first_run_key, report.last_run_key)
    found = report.counts()
    details: dict[str, Any] = {
        "counts": found,
        "repaired": report.repaired,
        "remaining": report.remaining_counts(),
    }
    if report.repaired and report.remaining:
        message = (
            f"{len(report.remaining)} difference(s) between the stores remain after repair "
            f"over {where} ({_describe_counts(report.remaining_counts())}); "
            f"{len(report.differences)} were found ({_describe_counts(found)})"
        )
        severity = Severity.CRITICAL
    elif report.differences:
        outcome = "all repaired" if report.repaired else "not repaired (run with --repair)"
        message = (
            f"reconciliation found {len(report.differences)} difference(s) between the stores "
            f"over {where} ({_describe_counts(found)}); {outcome}"
        )
        severity = Severity.WARNING
    else:
        severity = Severity.RESOLVED
        message = f"the stores agree over {where}"
    if severity is not Severity.RESOLVED:
        kind = EventKind.RECONCILE_DIVERGENCE
        _announce(Event(kind, severity, "reconciler", message, details=details), events)
    if report.remaining if report.repaired else report.differences:
        return
    _announce(
        Event(EventKind.RECONCILED, Severity.RESOLVED, "reconciler", message, details=details),
        events,
    )


def announce_failure(error: BaseException, where: str, events: EventBus | None) -> None:
    """A reconciliation pass that could not finish (a store down, most often): WARNING."""
    _announce(
        Event(
            EventKind.RECONCILE_FAILED,
            Severity.WARNING,
            "reconciler",
            f"reconciliation of {where} failed: {type(error).__name__}: {error}",
            error=error,
        ),
        events,
    )


def _announce(event: Event, events: EventBus | None) -> None:
    if events is not None:
        events.emit(event)
    elif event.severity in _LEVELS:
        log.log(_LEVELS[event.severity], "%s: %s", event.component, event.message)


class Reconciler:
    """The service's periodic reconciliation of recent runs; ``run_once`` is one pass."""

    def __init__(
        self,
        primary: CompletionStore,
        backup: CompletionStore,
        *,
        events: EventBus | None = None,
        runs: int = 50,
    ) -> None:
        self.primary = primary
        self.backup = backup
        self.events = events
        self.runs = runs
        self.last_divergence: dict[str, int] | None = None
        self.last_report: ReconcileReport | None = None

    def run_once(self) -> ReconcileReport:
        """Reconcile and repair the ``runs`` most recent run keys of either store.

        Its outcome and any failure are announced on ``events``; a failure is then raised.
        """
        try:
            keys = sorted(
                set(self.primary.list_runs(self.runs)) | set(self.backup.list_runs(self.runs))
            )
        except Exception as exc:
            announce_failure(exc, f"the {self.runs} most recent runs", self.events)
            raise
        if not keys:
            report = ReconcileReport(FIRST_KEY, FIRST_KEY, ())
            announce_outcome(report, self.events)
        else:
            report = reconcile(
                self.primary, self.backup, keys[0], keys[-1], repair=True, events=self.events
            )
        self.last_report = report
        self.last_divergence = report.counts()
        return report
