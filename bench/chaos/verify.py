"""The chaos run's invariants, computed from the stores, the receiver and the alerts."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaos.faults import PRIMARY_OUTAGE, RECEIVER_OUTAGE, REPLICA_KILL, FaultRecord
from chaos.load import Report
from chaos.receivers import Delivery, SlackAlert
from phasegate.model import RecordSet, Status

CRASHED_REPLICA = "crashed_replica"
FAILED_DELIVERY = "failed_delivery"
UNEXPLAINED = "unexplained"
# Alerts that show a primary outage, and a failing receiver, to whoever is on call.
PRIMARY_ALERTS = {"breaker_opened", "store_degraded", "claim_deferred", "both_stores_failed"}
DELIVERY_ALERTS = {"delivery_failed"}


@dataclass(frozen=True, slots=True)
class Redeliveries:
    """Deliveries of a trigger the receiver had already processed, by cause."""

    by_cause: Mapping[str, int]
    retries_after_refusal: int
    unexplained_samples: tuple[dict[str, Any], ...]

    @property
    def total(self) -> int:
        """Every redelivery, whatever its cause."""
        return sum(self.by_cause.values())


def stored_successes(records: RecordSet) -> set[Report]:
    """The successful completions a store holds."""
    return {
        Report(c.phase, c.run_key, c.processor)
        for c in records.completions
        if c.status is Status.SUCCESS
    }


def stored_triggers(records: RecordSet) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """The phase-runs a store has claimed, and those it has marked delivered."""
    claimed = {(e.trigger.phase, e.trigger.run_key) for e in records.triggers}
    delivered = {(e.trigger.phase, e.trigger.run_key) for e in records.triggers if e.delivered}
    return claimed, delivered


def _killed_between(kills: Sequence[float], start: float, end: float) -> bool:
    return any(start <= at <= end for at in kills)


def _in_window(records: Iterable[FaultRecord], kind: str, at: float, slack: float) -> bool:
    return any(r.kind == kind and r.started - slack <= at <= r.ended + slack for r in records)


def classify_redeliveries(
    deliveries: Sequence[Delivery],
    kills: Mapping[str, Sequence[float]],
    faults: Sequence[FaultRecord],
) -> Redeliveries:
    """Why each trigger reached the receiver again after it had processed it once.

    ``failed_delivery``: the receiver processed the previous delivery but answered 503
    (its answer was lost to the sender). ``crashed_replica``: the previous delivery was
    answered 200 by a replica SIGKILLed before this one (its lease expired). Anything else
    is ``unexplained``. Retries of deliveries the receiver refused are counted apart.
    """
    by_trigger: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in deliveries:
        by_trigger[delivery.trigger_id].append(delivery)
    causes: Counter[str] = Counter({CRASHED_REPLICA: 0, FAILED_DELIVERY: 0, UNEXPLAINED: 0})
    refused_retries = 0
    samples: list[dict[str, Any]] = []
    for trigger_id, chain in by_trigger.items():
        last_processed: Delivery | None = None
        for delivery in chain:
            if last_processed is None:
                if delivery is not chain[0]:
                    refused_retries += 1
            elif last_processed.status != 200:
                causes[FAILED_DELIVERY] += 1
            elif _killed_between(
                kills.get(last_processed.replica, ()), last_processed.at, delivery.at
            ):
                causes[CRASHED_REPLICA] += 1
            else:
                causes[UNEXPLAINED] += 1
                if len(samples) < 20:
                    samples.append(
                        {
                            "trigger_id": trigger_id,
                            "phase": delivery.phase,
                            "run_key": delivery.run_key,
                            "first_by": last_processed.replica,
                            "again_by": delivery.replica,
                            "gap_seconds": round(delivery.at - last_processed.at, 3),
                            "near_primary_outage": _in_window(
                                faults, PRIMARY_OUTAGE, last_processed.at, 10.0
                            ),
                        }
                    )
            if delivery.processed:
                last_processed = delivery
    return Redeliveries(dict(causes), refused_retries, tuple(samples))


def double_claims_seen_by_receiver(deliveries: Sequence[Delivery]) -> list[dict[str, Any]]:
    """Phase-runs delivered under two trigger ids, or one id claimed at two moments."""
    ids: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    claimed_at: dict[str, set[str]] = defaultdict(set)
    for delivery in deliveries:
        ids[(delivery.phase, delivery.run_key, delivery.attempt)].add(delivery.trigger_id)
        claimed_at[delivery.trigger_id].add(delivery.triggered_at)
    found = [
        {"phase_run": list(key), "trigger_ids": sorted(values)}
        for key, values in ids.items()
        if len(values) > 1
    ]
    found += [
        {"trigger_id": key, "triggered_at": sorted(values)}
        for key, values in claimed_at.items()
        if len(values) > 1
    ]
    return found


def failed_rounds(deliveries: Sequence[Delivery], attempts: int = 3) -> int:
    """Delivery rounds the receiver made fail: ``attempts`` refusals of one trigger in a row
    from one replica (a round's retries all refused, so the dispatcher must alert)."""
    streak: Counter[tuple[str, str]] = Counter()
    rounds = 0
    for delivery in deliveries:
        key = (delivery.trigger_id, delivery.replica)
        if delivery.status == 200:
            streak[key] = 0
            continue
        streak[key] += 1
        if streak[key] == attempts:
            rounds += 1
            streak[key] = 0
    return rounds


def alerted_classes(
    alerts: Sequence[SlackAlert],
    injected: set[str],
    crash_redeliveries: int,
    delivery_rounds_failed: int,
) -> dict[str, Any]:
    """For each injected failure class: whether an alert showed it, and which.

    A receiver outage short enough for the dispatcher's retries to absorb fails nothing,
    so it needs an alert only when some delivery round failed all its tries.
    """
    by_error = Counter(a.error_type for a in alerts if a.severity in {"warning", "critical"})
    primary = {k: v for k, v in by_error.items() if k in PRIMARY_ALERTS}
    delivery = {k: v for k, v in by_error.items() if k in DELIVERY_ALERTS}
    lease = [a for a in alerts if "lease" in a.text.lower()]
    table: dict[str, Any] = {}
    if PRIMARY_OUTAGE in injected:
        table[PRIMARY_OUTAGE] = {"alerted": bool(primary), "alerts": primary}
    if RECEIVER_OUTAGE in injected:
        table[RECEIVER_OUTAGE] = {
            "alerted": bool(delivery) or delivery_rounds_failed == 0,
            "alerts": delivery,
            "delivery_rounds_failed": delivery_rounds_failed,
        }
    if REPLICA_KILL in injected:
        # A killed process cannot alert; what phasegate can see is a lease it left behind.
        table[REPLICA_KILL] = {
            "alerted": bool(lease) or crash_redeliveries == 0,
            "alerts": {"expired lease": len(lease)},
            "note": "required only when a kill left a delivered-but-unmarked trigger behind",
        }
    return table
