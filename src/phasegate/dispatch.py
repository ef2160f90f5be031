"""The outbox dispatcher: deliver claimed triggers at least once, never drop one.

Each pass leases the due triggers it will deliver (owner and expiry, decided by the
store), so dispatchers of several replicas never deliver the same trigger at once; a
lease left by a crashed replica expires and the trigger goes out again. Each trigger
is delivered through the transport with retries; one that still fails is given a later
next-attempt time (exponential, capped) and alerted, and stays in the outbox until a
transport accepts it. The same trigger id goes out every time, so receivers
de-duplicate.

Failures are alerted, not only logged: a failed delivery (``delivery_failed``), a
delivered trigger that neither store could mark delivered (``trigger_not_marked``: it
goes out again), a failed delivery that neither store could record
(``delivery_failure_not_recorded``: it is retried without back-off), and an unexpected
error in a pass (``unexpected_error``; the loop keeps going), and a trigger whose lease
another replica let expire undelivered (``lease_expired``: that replica crashed or hung).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import uuid
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from phasegate.clock import Clock
from phasegate.errors import BothStoresFailed, DeliveryError, StoreError
from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.model import OutboxEntry
from phasegate.resilience.retry import RetryPolicy, call_with_retry
from phasegate.tracker import CompletionTracker
from phasegate.transports.base import BatchTriggerTransport, TriggerTransport
from phasegate.unexpected import alerts_unexpected

log = logging.getLogger(__name__)

DELIVERY_POLICY = RetryPolicy(attempts=3, base=0.5, max_delay=5.0)
# Delivered triggers are marked in both stores together, at most this many at a time.
MARK_EVERY = 25
# Pages a plain (leasing) pass takes at most; the loop then runs another at once, having
# looked at its stop flag in between.
MAX_LEASED_PAGES = 10
# Marks the primary missed, kept to be made again on it: at most this many triggers (the
# replicator's catch-up copies any dropped beyond it, only later).
MAX_OWED_MARKS = 10_000


@dataclass(frozen=True, slots=True)
class DispatchReport:
    """What one dispatcher pass did."""

    delivered: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
    unfinished: str | None = None  # why the pass stopped before it had tried every trigger
    more: bool = False  # a plain pass took its last page while more were due

    @property
    def ok(self) -> bool:
        """Nothing failed in this pass, and it went through what it was asked to."""
        return not self.failed and self.unfinished is None


class _Pass:
    """How a pass ended, noted by its pages."""

    def __init__(self) -> None:
        self.unfinished: str | None = None
        self.more = False


class Dispatcher:
    """Delivers pending outbox entries; ``run_once`` is one pass, ``run_forever`` a loop."""

    def __init__(
        self,
        tracker: CompletionTracker,
        transport: TriggerTransport,
        *,
        events: EventBus | None = None,
        clock: Clock | None = None,
        policy: RetryPolicy = DELIVERY_POLICY,
        redelivery_base: float = 5.0,
        redelivery_max: float = 300.0,
        batch_size: int = 100,
        rng: random.Random | None = None,
        lease_seconds: float = 60.0,
        owner: str | None = None,
    ) -> None:
        self.tracker = tracker
        self.transport = transport
        self.events = events or EventBus()
        self.clock = clock or tracker.clock
        self.policy = policy
        self.redelivery_base = redelivery_base
        self.redelivery_max = redelivery_max
        self.batch_size = batch_size
        self._rng = rng or random.Random()
        self.lease_seconds = lease_seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pass_lock = threading.Lock()
        self._wake = threading.Event()
        # Delivered triggers the backup marked and the primary missed (it was out), with
        # when they were delivered: marked on the primary before the next pass leases.
        self._owed: deque[tuple[list[OutboxEntry], datetime]] = deque()

    def wake(self) -> None:
        """Ask the loop to run a pass now (a trigger was just claimed)."""
        self._wake.set()

    def pending(self, *, include_deferred: bool = False) -> list[OutboxEntry]:
        """The oldest :attr:`batch_size` undelivered entries due now (or of all of them,
        with ``include_deferred``)."""
        return self._pending(self.batch_size, include_deferred=include_deferred)

    def _pending(self, limit: int, *, include_deferred: bool) -> list[OutboxEntry]:
        horizon = self.clock.now()
        if include_deferred:
            horizon += timedelta(days=36500)
        return self.tracker.pending_triggers(horizon, limit)

    def lease(self) -> list[OutboxEntry]:
        """Lease the due triggers this dispatcher will deliver now.

        A trigger another owner had leased and let expire undelivered is the only trace
        a crashed (or hung) replica leaves: each one is alerted (``lease_expired``).
        """
        now = self.clock.now()
        leased = self.tracker.lease_triggers(
            self.owner, now, now + timedelta(seconds=self.lease_seconds), self.batch_size
        )
        for entry in leased:
            if entry.expired_lease_owner is not None:
                self._taken_over(entry, entry.expired_lease_owner)
        return leased

    def _taken_over(self, entry: OutboxEntry, dead_owner: str) -> None:
        self._announce(
            EventKind.LEASE_EXPIRED,
            Severity.WARNING,
            entry,
            f"was leased by {dead_owner}, whose lease expired before it was delivered (that "
            f"replica crashed or hung); {self.owner} delivers it now, with the same id",
            lease_owner=dead_owner,
        )

    def _announce(
        self,
        kind: EventKind,
        severity: Severity,
        entry: OutboxEntry,
        what: str,
        *,
        error: BaseException | None = None,
        **details: Any,
    ) -> None:
        """Emit ``kind`` about ``entry``'s trigger: ``what`` follows its description."""
        trigger = entry.trigger
        self.events.emit(
            Event(
                kind,
                severity,
                "dispatcher",
                f"trigger {trigger.trigger_id} ({trigger.phase} -> "
                f"{trigger.next_phase or 'end'}, {trigger.run_key}) {what}",
                run_key=trigger.run_key,
                phase=trigger.phase,
                correlation_id=trigger.correlation_id,
                error=error,
                details={"trigger_id": trigger.trigger_id, **details},
            )
        )

    @alerts_unexpected("dispatcher")
    def run_once(
        self, only: Collection[str] | None = None, *, include_deferred: bool = False
    ) -> DispatchReport:
        """Deliver every due trigger (or just the ids in ``only``) once, with retries.

        ``include_deferred`` also tries triggers whose next attempt is not due yet (an
        operator running ``phasegate dispatch`` wants them tried now). A plain pass leases
        what it delivers; an operator's pass (``only`` or ``include_deferred``) does not.
        Either goes through the outbox :attr:`batch_size` triggers at a time, each
        trigger tried once: an operator's pass until it has tried every pending one (or
        every one of ``only``), a plain pass for at most :data:`MAX_LEASED_PAGES` pages
        (``more`` then says that others are due).
        """
        with self._pass_lock:
            self._mark_owed()
            delivered: list[str] = []
            failed: list[tuple[str, str]] = []
            state = _Pass()
            for entries in self._pages(only, include_deferred, state):
                self._deliver_page(entries, delivered, failed)
            return DispatchReport(tuple(delivered), tuple(failed), state.unfinished, state.more)

    def _pages(
        self, only: Collection[str] | None, include_deferred: bool, state: _Pass
    ) -> Iterator[list[OutboxEntry]]:
        """The triggers of a pass, a page at a time. A store error on a later page ends
        the pass with what it delivered so far, noted as ``unfinished``."""
        pages = (
            self._leased_pages(state)
            if only is None and not include_deferred
            else self._pending_pages(only, include_deferred)
        )
        first = True
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except StoreError as exc:
                if first:
                    raise
                state.unfinished = f"reading the outbox failed ({exc})"
                log.warning("dispatcher pass stopped early: %s", state.unfinished)
                return
            first = False
            yield page

    def _leased_pages(self, state: _Pass) -> Iterator[list[OutboxEntry]]:
        # What a pass leased stays leased and what it delivered is no longer due, so the
        # next lease takes new triggers. One this pass tried already (due again: its
        # back-off or its lease ran out meanwhile) ends the pass; it stays leased, and a
        # later pass takes it when its lease expires.
        seen: set[str] = set()
        for _ in range(MAX_LEASED_PAGES):
            leased = self.lease()
            fresh = [entry for entry in leased if entry.trigger.trigger_id not in seen]
            seen.update(entry.trigger.trigger_id for entry in fresh)
            if fresh:
                yield fresh
            if len(leased) < self.batch_size or len(fresh) < len(leased):
                return
        state.more = True

    def _pending_pages(
        self, only: Collection[str] | None, include_deferred: bool
    ) -> Iterator[list[OutboxEntry]]:
        # Nothing is leased here: each read takes the oldest pending triggers again, as
        # many as were seen already and a page more (doubling), and skips the seen ones
        # (still pending after a failed delivery, or not among ``only``).
        wanted = None if only is None else set(only)
        seen: set[str] = set()
        while wanted is None or not wanted <= seen:
            limit = len(seen) + max(self.batch_size, len(seen))
            page = self._pending(limit, include_deferred=include_deferred)
            fresh = [entry for entry in page if entry.trigger.trigger_id not in seen]
            seen.update(entry.trigger.trigger_id for entry in fresh)
            picked = [e for e in fresh if wanted is None or e.trigger.trigger_id in wanted]
            for start in range(0, len(picked), self.batch_size):
                yield picked[start : start + self.batch_size]
            if len(page) < limit or not fresh:
                return

    def _deliver_page(
        self, entries: list[OutboxEntry], delivered: list[str], failed: list[tuple[str, str]]
    ) -> None:
        batched = self._deliver_batch(entries)
        unmarked: list[OutboxEntry] = []
        for entry in entries:
            trigger_id = entry.trigger.trigger_id
            error = None if trigger_id in batched else self._deliver(entry)
            if error is None:
                delivered.append(trigger_id)
                unmarked.append(entry)
            else:
                failed.append((trigger_id, error))
            if error is not None or len(unmarked) >= MARK_EVERY:
                # Marks go out together, and before a slow stretch (retries) begins.
                self._mark_delivered(unmarked)
                unmarked = []
        self._mark_delivered(unmarked)

    def _deliver(self, entry: OutboxEntry) -> str | None:
        trigger = entry.trigger
        try:
            call_with_retry(
                lambda: self.transport.deliver(trigger),
                self.policy,
                sleep=self.clock.sleep,
                rng=self._rng,
            )
        except DeliveryError as exc:
            self._defer(entry, str(exc))
            return str(exc)
        return None

    def _deliver_batch(self, entries: list[OutboxEntry]) -> set[str]:
        """Hand several triggers to a batching transport at once; the ids it accepted.

        The rest go through :meth:`_deliver` one by one, with its retries and alerts.
        """
        if len(entries) < 2 or not isinstance(self.transport, BatchTriggerTransport):
            return set()
        try:
            outcomes = self.transport.deliver_many([entry.trigger for entry in entries])
        except DeliveryError:
            return set()
        return {e.trigger.trigger_id for e, out in zip(entries, outcomes, strict=True) if not out}

    def _mark_delivered(self, entries: list[OutboxEntry]) -> None:
        """Mark delivered triggers in both stores, one write per store for all of them."""
        if not entries:
            return
        now = self.clock.now()
        error: BothStoresFailed | None = None
        try:
            written = self.tracker.mark_delivered_many(entries, now)
        except BothStoresFailed as exc:
            error = exc
        else:
            if not written.primary_ok and written.primary_error is not None:
                self._owe(entries, now)
        for entry in entries:
            if error is not None:
                self._not_marked(entry, error)
            latency = (now - entry.claimed_at).total_seconds()
            self._announce(
                EventKind.TRIGGER_DELIVERED,
                Severity.INFO,
                entry,
                f"delivered via {self.transport.describe()} {latency * 1000:.0f} ms after its "
                "claim",
                latency_seconds=latency,
                marked=error is None,
            )

    def _owe(self, entries: list[OutboxEntry], delivered_at: datetime) -> None:
        """Keep marks the primary missed for :meth:`_mark_owed`. Leases are taken on the
        primary, where these triggers stay leased and undelivered until the replicator
        has caught it up on their run keys, which after an outage can take longer than a
        lease: another replica would then lease them and deliver them again."""
        self._owed.append((list(entries), delivered_at))
        owed = sum(len(group) for group, _ in self._owed)
        while owed > MAX_OWED_MARKS and len(self._owed) > 1:
            dropped, _ = self._owed.popleft()
            owed -= len(dropped)
            log.warning(
                "%d delivered trigger(s) left to the replicator to mark on the primary",
                len(dropped),
            )

    def _mark_owed(self) -> None:
        """Make the marks the primary missed again, on the primary alone (the backup has
        them), oldest first, before this pass leases; while it fails they wait."""
        while self._owed:
            entries, delivered_at = self._owed[0]
            try:
                self.tracker.mark_delivered_on_primary(entries, delivered_at)
            except StoreError as exc:
                log.debug("marks owed to the primary wait: %s", exc)
                return
            self._owed.popleft()
            log.info("marked %d delivered trigger(s) the primary missed", len(entries))

    def _not_marked(self, entry: OutboxEntry, error: BothStoresFailed) -> None:
        """Delivered but not marked delivered: it will go out again, with the same id."""
        self._announce(
            EventKind.TRIGGER_NOT_MARKED,
            Severity.CRITICAL,
            entry,
            f"was delivered but not marked delivered: both stores failed ({error}); it will "
            "be delivered again with the same id",
            error=error,
        )

    def _defer(self, entry: OutboxEntry, error: str) -> None:
        attempts = entry.attempts + 1
        delay = min(self.redelivery_max, self.redelivery_base * 2 ** (attempts - 1))
        next_attempt_at = self.clock.now() + timedelta(seconds=delay)
        recorded = True
        try:
            self.tracker.record_delivery_failure(entry, error, next_attempt_at)
        except StoreError as exc:
            recorded = False
            self._failure_not_recorded(entry, exc)
        self._announce(
            EventKind.DELIVERY_FAILED,
            Severity.CRITICAL,
            entry,
            f"not delivered after {self.policy.attempts} tries (delivery round {attempts}): "
            f"{error}; next attempt in {delay:.0f}s",
            attempts=attempts,
            recorded=recorded,
        )

    def _failure_not_recorded(self, entry: OutboxEntry, error: StoreError) -> None:
        """A failed delivery neither store recorded: no back-off, no attempt counted."""
        self._announce(
            EventKind.DELIVERY_FAILURE_NOT_RECORDED,
            Severity.CRITICAL,
            entry,
            f"failed, and the failure could not be recorded ({error}); it stays due and is "
            "retried at every pass, without back-off",
            error=error,
        )

    def run_forever(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Run passes until ``stop`` is set: at once when woken, else every ``interval``.

        A pass that fails never ends the loop; its failure was alerted where it happened
        (both stores failing a read, or an unexpected error by :meth:`run_once`'s guard).
        """
        while not stop.is_set():
            self._wake.clear()
            try:
                if self.run_once().more:
                    continue  # a backlog: the next pass at once, stop looked at first
            except StoreError as exc:
                log.warning("dispatcher pass failed (%s); retrying in %.1fs", exc, interval)
            except Exception as exc:  # noqa: BLE001 - alerted by run_once; the loop must live
                log.warning(
                    "dispatcher pass failed: unexpected %s (alerted); retrying in %.1fs",
                    type(exc).__name__,
                    interval,
                )
            self._wake.wait(interval)
            if stop.is_set():
                return
