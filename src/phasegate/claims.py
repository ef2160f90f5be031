"""Who decides a claim: the claim policy, and nothing else.

A claim (of a trigger, or of a timeout report) is a compare-and-set: of everyone who
claims the same thing, exactly one wins. Exactly-once holds only while every replica
arbitrates on the same registry, so:

- ``defer`` (the default): only the primary decides. While it is out, or while this
  process knows it still misses records of the run, the claim is *deferred*: nothing is
  claimed, and the sweep claims once the primary is back and caught up. No double claim
  can arise, whatever the outage.
- ``backup``: while the primary is out the backup decides, so triggers flow during long
  outages; a claim made on the backup at the edge of an outage can race one made on the
  primary by another replica. Reconciliation detects such a double claim and alerts.

The winner's claim is mirrored to the backup: by compare-and-set when the backup has a
claim registry (which also tells when the backup already held it), else by import.

A claim that neither store could decide (``backup`` policy, both out) is alerted as
``both_stores_failed`` and raised; the next claim decided resolves it. A deferred claim
is alerted by the orchestrator (``claim_deferred``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from phasegate.errors import BothStoresFailed, ConfigError, StoreError, StoreUnavailable
from phasegate.events import Event, EventKind, Severity
from phasegate.model import OutboxEntry, PhaseExecution, RecordSet, Trigger
from phasegate.replicator import Replicator
from phasegate.stores.base import Capability, claim_triggers, keeps_executions_with_claims
from phasegate.stores.guarded import Counters, GuardedStore, StoreRole

log = logging.getLogger(__name__)


class ClaimPolicy(StrEnum):
    """``[resilience] claim_fallback``: what happens to claims while the primary is out."""

    DEFER = "defer"
    BACKUP = "backup"


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """Whether this caller won a claim, and on which store.

    ``claimed_on`` is ``None`` when the claim was deferred (see :attr:`deferred`).
    ``backup_ok`` says whether the backup holds the claim too.
    """

    won: bool
    claimed_on: StoreRole | None
    backup_ok: bool = True
    error: BaseException | None = None
    # The won claim's execution record was kept with it (see CompletionTracker.claim_triggers).
    execution_kept: bool = False

    @property
    def deferred(self) -> bool:
        """No store could decide the claim safely now; a later sweep will."""
        return self.claimed_on is None


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What to claim: the compare-and-set itself, and the record that mirrors it."""

    what: str
    run_key: str
    claim: Callable[[Any], bool]
    mirror: RecordSet


def trigger_claim(trigger: Trigger, execution: PhaseExecution | None = None) -> ClaimRequest:
    """The claim of ``trigger``: its compare-and-set by id and the outbox entry that mirrors
    it; with ``execution``, the won claim's execution record rides in both (kept in the
    claim's own transaction where the store can, see ``claim_triggers``)."""
    what = f"claim trigger {trigger.phase}/{trigger.run_key}"
    entry = OutboxEntry(trigger, trigger.triggered_at)
    if execution is None:
        return ClaimRequest(
            what,
            trigger.run_key,
            lambda store: store.claim_trigger(trigger),
            RecordSet(triggers=(entry,)),
        )
    return ClaimRequest(
        what,
        trigger.run_key,
        lambda store: claim_triggers(store, [trigger], [execution])[0],
        RecordSet(triggers=(entry,), executions=(execution,)),
    )


class ClaimArbiter:
    """Decides claims by the configured :class:`ClaimPolicy`."""

    def __init__(
        self,
        primary: GuardedStore,
        backup: GuardedStore,
        replicator: Replicator,
        *,
        policy: ClaimPolicy = ClaimPolicy.DEFER,
        counters: Counters,
    ) -> None:
        if not primary.can(Capability.CLAIMS):
            raise ConfigError(
                f"the primary store {primary.name!r} has no claim registry: "
                "use a store that can compare-and-set (SQL, Firestore, memory)"
            )
        if policy is ClaimPolicy.BACKUP and not backup.can(Capability.CLAIMS):
            raise ConfigError(
                f'[resilience] claim_fallback = "backup" needs a backup store with a claim '
                f"registry, and {backup.name!r} has none (an append-only ledger never decides "
                'claims); use claim_fallback = "defer"'
            )
        self._primary = primary
        self._backup = backup
        self._replicator = replicator
        self.policy = policy
        self._counters = counters
        self._lock = threading.Lock()
        self._failing = False

    def claim(self, request: ClaimRequest) -> ClaimOutcome:
        """Claim ``request`` exactly once across every replica sharing the stores."""
        try:
            if self._replicator.misses(StoreRole.PRIMARY, request.run_key):
                raise StoreUnavailable(
                    f"primary store still misses records of run {request.run_key}"
                )
            won = self._primary.call(request.claim)
        except StoreError as exc:
            return self._primary_out(request, exc)
        if self._failing:
            self._recovered(request)
        if not won:
            # Someone else holds the claim; only the winner mirrors it to the backup.
            return ClaimOutcome(False, StoreRole.PRIMARY)
        return ClaimOutcome(True, StoreRole.PRIMARY, self._mirror(request))

    def claim_together(
        self, requests: Sequence[ClaimRequest], claim_all: Callable[[Any], list[bool]]
    ) -> list[ClaimOutcome]:
        """Claim several requests on the primary at once (``claim_all`` decides each one
        by its own compare-and-set, in one commit) and mirror the winners to the backup
        in one import; one outcome per request, as :meth:`claim` would answer it.

        Anything but the plain case (a run the primary misses, the "backup" policy
        mirroring by compare-and-set) takes the requests one by one through :meth:`claim`.
        """
        mirrors_by_import = not (
            self.policy is ClaimPolicy.BACKUP and self._backup.can(Capability.CLAIMS)
        )
        if (
            len(requests) < 2
            or not mirrors_by_import
            or any(self._replicator.misses(StoreRole.PRIMARY, r.run_key) for r in requests)
        ):
            return [self.claim(request) for request in requests]
        try:
            won = self._primary.call(claim_all)
        except StoreError as exc:
            return [self._primary_out(request, exc) for request in requests]
        if self._failing:
            self._recovered(requests[0])
        winners = [request for request, first in zip(requests, won, strict=True) if first]
        mirrored = self._mirror_together(winners)
        return [
            ClaimOutcome(True, StoreRole.PRIMARY, mirrored)
            if first
            else ClaimOutcome(False, StoreRole.PRIMARY)
            for first in won
        ]

    def claim_triggers(
        self, triggers: Sequence[Trigger], executions: Sequence[PhaseExecution] | None = None
    ) -> list[ClaimOutcome]:
        """Claim several triggers, each exactly once, deciding them together where the
        primary can (one commit) and mirroring the winners in one import.

        ``executions`` (one per trigger) ride along where that keeps them exactly where
        the claims are: under "defer", with a primary that keeps them in the claim's own
        transaction; the mirror copies them with the triggers. Each outcome says whether
        its execution was kept (``execution_kept``); the caller records the others."""
        if executions is None or not (
            self.policy is ClaimPolicy.DEFER and keeps_executions_with_claims(self._primary.store)
        ):
            requests = [trigger_claim(trigger) for trigger in triggers]
            return self.claim_together(requests, lambda store: claim_triggers(store, triggers))
        requests = [trigger_claim(t, e) for t, e in zip(triggers, executions, strict=True)]
        outcomes = self.claim_together(
            requests, lambda store: claim_triggers(store, triggers, executions)
        )
        return [
            replace(o, execution_kept=True) if o.won and o.claimed_on is StoreRole.PRIMARY else o
            for o in outcomes
        ]

    def mirror_claims(
        self, triggers: Sequence[Trigger], executions: Sequence[PhaseExecution]
    ) -> bool:
        """Copy triggers the primary claimed in a write's own transaction (each with its
        execution record) to the backup, in one import, as :meth:`claim_triggers` copies
        its winners; ``False`` (the run noted as missed there) when the backup failed."""
        return self._mirror_together(
            [trigger_claim(t, e) for t, e in zip(triggers, executions, strict=True)]
        )

    def _mirror_together(self, winners: Sequence[ClaimRequest]) -> bool:
        if not winners or not self._backup.can(Capability.REPLICATION):
            return True
        copy = RecordSet(
            triggers=tuple(e for w in winners for e in w.mirror.triggers),
            executions=tuple(e for w in winners for e in w.mirror.executions),
        )
        try:
            self._backup.call(lambda store: store.import_records(copy))
        except StoreError as exc:
            self._replicator.note_missed(StoreRole.BACKUP, sorted({w.run_key for w in winners}))
            log.warning("%d claims: backup store failed (%s)", len(winners), exc)
            return False
        return True

    def _mirror(self, request: ClaimRequest) -> bool:
        try:
            # Under "defer" the backup never decides, so the claim is copied (an idempotent
            # import: a delivery the dispatcher already recorded there is kept). Under
            # "backup" it is claimed there too, which tells when the backup held it first.
            if self.policy is ClaimPolicy.BACKUP and self._backup.can(Capability.CLAIMS):
                if not self._backup.call(request.claim):
                    # The backup already held this claim: made there during a primary outage
                    # under the "backup" policy, or replayed. Reconciliation checks it.
                    self._counters.add("claims.already_on_backup")
                    log.warning("%s: the backup store already held this claim", request.what)
            elif self._backup.can(Capability.REPLICATION):
                self._backup.call(lambda store: store.import_records(request.mirror))
        except StoreError as exc:
            self._replicator.note_missed(StoreRole.BACKUP, (request.run_key,))
            log.warning("%s: backup store failed (%s)", request.what, exc)
            return False
        return True

    def _primary_out(self, request: ClaimRequest, primary_error: StoreError) -> ClaimOutcome:
        if self.policy is ClaimPolicy.DEFER or self._replicator.misses(
            StoreRole.BACKUP, request.run_key
        ):
            self._counters.add("claims.deferred")
            log.warning(
                "%s: deferred until the primary store decides it (%s)",
                request.what,
                primary_error,
            )
            return ClaimOutcome(False, None, backup_ok=False, error=primary_error)
        try:
            won = self._backup.call(request.claim)
        except StoreError as backup_error:
            self._counters.add("both_failed")
            error = BothStoresFailed(request.what, primary_error, backup_error)
            self._both_failed(request, error)
            raise error from backup_error
        if self._failing:
            self._recovered(request)
        self._replicator.note_missed(StoreRole.PRIMARY, (request.run_key,))
        self._counters.add("claims.on_backup")
        log.warning("%s: claimed on the backup store while the primary is out", request.what)
        return ClaimOutcome(won, StoreRole.BACKUP, backup_ok=True, error=primary_error)

    def _both_failed(self, request: ClaimRequest, error: BothStoresFailed) -> None:
        with self._lock:
            self._failing = True
        self._replicator.events.emit(
            Event(
                EventKind.BOTH_STORES_FAILED,
                Severity.CRITICAL,
                "claims",
                f"{request.what} for run {request.run_key} failed: both stores failed "
                f"({error}); the sweep claims it once a store answers",
                run_key=request.run_key,
                error=error,
            )
        )

    def _recovered(self, request: ClaimRequest) -> None:
        with self._lock:
            recovered, self._failing = self._failing, False
        if recovered:
            self._replicator.events.emit(
                Event(
                    EventKind.STORES_RECOVERED,
                    Severity.RESOLVED,
                    "claims",
                    f"claims are decided again ({request.what})",
                    run_key=request.run_key,
                )
            )
