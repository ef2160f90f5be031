"""The outbox's writes on both stores, for the dispatcher: marking triggers delivered,
recording failed deliveries, leasing due triggers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from phasegate.claims import ClaimPolicy
from phasegate.errors import StoreError
from phasegate.model import OutboxEntry, RecordSet
from phasegate.reads import keeps_triggers
from phasegate.stores.base import Capability, mark_delivered
from phasegate.stores.guarded import GuardedStore
from phasegate.writes import DualWriteResult

log = logging.getLogger(__name__)


class OutboxWrites:
    """Mixed into :class:`~phasegate.tracker.CompletionTracker`."""

    _primary: GuardedStore
    _backup: GuardedStore

    if TYPE_CHECKING:

        @property
        def claim_policy(self) -> ClaimPolicy: ...

        def dual_write(
            self,
            operation: str,
            run_keys: Iterable[str],
            fn: Callable[[Any], Any],
            capability: Capability | Callable[[GuardedStore], bool],
        ) -> DualWriteResult: ...

    def mark_delivered(self, entry: OutboxEntry, delivered_at: datetime) -> DualWriteResult:
        """Record in both stores that a trigger was delivered.

        The primary marks it; the other store receives the delivered entry as an
        idempotent import, so the mark lands even where the claim's own copy has not
        arrived yet (the claim's mirror and the delivery race). A ledger backup
        (BigQuery) keeps the delivery too: were the primary to lose its data, the trigger
        restored from the backup must come back delivered, not pending.
        """
        return self.mark_delivered_many([entry], delivered_at)

    def mark_delivered_many(
        self, entries: Sequence[OutboxEntry], delivered_at: datetime
    ) -> DualWriteResult:
        """:meth:`mark_delivered` for several triggers: one write per store."""
        delivered = RecordSet(
            triggers=tuple(
                replace(
                    entry,
                    delivered_at=delivered_at,
                    last_error=None,
                    next_attempt_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    expired_lease_owner=None,
                )
                for entry in entries
            )
        )
        ids = [entry.trigger.trigger_id for entry in entries]

        def mark(store: Any) -> None:
            if store is self._primary.store or Capability.REPLICATION not in store.capabilities:
                mark_delivered(store, ids, delivered_at)
            else:
                store.import_records(delivered)

        what = f"trigger {ids[0]}" if len(ids) == 1 else f"{len(ids)} triggers"
        return self.dual_write(
            f"mark {what} delivered",
            sorted({entry.trigger.run_key for entry in entries}),
            mark,
            keeps_triggers,
        )

    def mark_delivered_on_primary(
        self, entries: Sequence[OutboxEntry], delivered_at: datetime
    ) -> None:
        """Mark on the primary alone triggers whose delivery the backup already holds (a
        mark the primary missed); raises the primary's error."""
        ids = [entry.trigger.trigger_id for entry in entries]
        self._primary.call(lambda store: mark_delivered(store, ids, delivered_at))

    def record_delivery_failure(
        self, entry: OutboxEntry, error: str, next_attempt_at: datetime
    ) -> DualWriteResult:
        """Record in both stores that a delivery attempt failed."""
        trigger = entry.trigger
        return self.dual_write(
            f"record delivery failure of {trigger.trigger_id}",
            (trigger.run_key,),
            lambda store: store.record_delivery_failure(trigger.trigger_id, error, next_attempt_at),
            keeps_triggers,
        )

    def lease_triggers(
        self, owner: str, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[OutboxEntry]:
        """Lease due triggers to ``owner`` on the primary's outbox.

        Leases are exclusive only on one registry, so with ``claim_fallback = "defer"``
        the primary alone leases and deliveries wait for it, as claims do: a lease taken
        on the backup during an outage would not stop another replica leasing the same
        trigger on the primary as it comes back (the small chaos run caught two replicas
        delivering at once). With ``"backup"`` the backup's outbox is used while the
        primary is out, and such a concurrent redelivery (same id) is the accepted price.
        """
        stores: tuple[GuardedStore, ...] = (self._primary, self._backup)
        if self.claim_policy is ClaimPolicy.DEFER:
            stores = (self._primary,)
        for guarded in stores:
            if not guarded.can(Capability.OUTBOX):
                continue
            try:
                leased: list[OutboxEntry] = guarded.call(
                    lambda store: store.lease_triggers(owner, now, lease_until, limit)
                )
            except StoreError as exc:
                log.warning("leasing triggers on the %s store failed: %s", guarded.role, exc)
                continue
            return leased
        return []
