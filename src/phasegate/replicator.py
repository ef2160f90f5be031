"""Catches a recovered store up with what it missed, in the background.

Whenever a write reaches one store but not the other, the tracker tells the
replicator which run keys the failing store missed. :meth:`Replicator.run_once`
copies those run keys over (export from the store that has them, idempotent import
into the one that lacks them) once the lacking store answers again; a background
thread started with :meth:`Replicator.start` calls it every ``interval`` seconds, and
:meth:`Replicator.wake` makes it run at once. No request thread ever waits for it.

A store that stays behind for ``degraded_after`` seconds is reported once as degraded
(``STORE_DEGRADED``, a warning that is alerted), and once more as resolved when it has
caught up. An unexpected error in a pass is alerted (``unexpected_error``) and the
background thread keeps going.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.errors import StoreError
from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.model import RecordSet
from phasegate.resilience.breaker import BreakerState
from phasegate.stores.base import Capability, export_runs
from phasegate.stores.guarded import Counters, GuardedStore, StoreRole
from phasegate.unexpected import alerts_unexpected

log = logging.getLogger(__name__)

CaughtUpListener = Callable[[StoreRole, frozenset[str]], None]


CATCH_UP_KEYS = 50
"""Run keys copied per export and import: after a long outage under load a store misses
thousands, and a few queries and one transaction (on SQLite, one ``fsync``) per run key
made the catch-up, and the time the stores differ, several times longer."""


def _importer(records: RecordSet) -> Callable[[Any], None]:
    def run(store: Any) -> None:
        store.import_records(records)

    return run


class Replicator:
    """Keeps the run keys each store missed and copies them over when it can."""

    def __init__(
        self,
        primary: GuardedStore,
        backup: GuardedStore,
        *,
        counters: Counters,
        interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        events: EventBus | None = None,
        degraded_after: float = 300.0,
    ) -> None:
        self._stores = {StoreRole.PRIMARY: primary, StoreRole.BACKUP: backup}
        self._counters = counters
        self._interval = interval
        self._clock = clock
        self.events = events or EventBus()
        self._degraded_after = degraded_after
        self._lock = threading.Lock()
        # Each missed run key, with when it was last noted (a count): a catch-up forgets
        # only the keys not noted again while it copied them.
        self._missed: dict[StoreRole, dict[str, int]] = {role: {} for role in StoreRole}
        self._notes = itertools.count(1)
        self._behind_since: dict[StoreRole, float | None] = dict.fromkeys(StoreRole)
        self._degraded: set[StoreRole] = set()
        self._last_error: dict[StoreRole, str] = {}
        self._listeners: list[CaughtUpListener] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def note_missed(self, role: StoreRole, run_keys: Iterable[str]) -> None:
        """``role`` failed a write of ``run_keys``: it must be caught up on them."""
        keys = set(run_keys)
        if not keys:
            return
        with self._lock:
            if not self._missed[role] and self._behind_since[role] is None:
                self._behind_since[role] = self._clock.monotonic()
            note = next(self._notes)
            self._missed[role].update(dict.fromkeys(keys, note))
        self._wake.set()

    def missed(self, role: StoreRole) -> frozenset[str]:
        """The run keys ``role`` still misses."""
        with self._lock:
            return frozenset(self._missed[role])

    def misses(self, role: StoreRole, run_key: str) -> bool:
        """Whether ``role`` still misses records of ``run_key``."""
        with self._lock:
            return run_key in self._missed[role]

    def add_listener(self, listener: CaughtUpListener) -> None:
        """Call ``listener(role, run_keys)`` after ``role`` was caught up on ``run_keys``."""
        self._listeners.append(listener)

    @alerts_unexpected("replicator")
    def run_once(self, *, force: bool = False) -> dict[StoreRole, frozenset[str]]:
        """Catch up every store that missed run keys and answers again; return what is
        still missed. ``force`` tries a store whose breaker is open too (an operator's or
        a shutdown's explicit pass, not the background loop's)."""
        for role in StoreRole:
            done = self._catch_up(role, force=force)
            if done:
                for listener in self._listeners:
                    listener(role, done)
            self._judge(role)
        return {role: self.missed(role) for role in StoreRole}

    def _judge(self, role: StoreRole) -> None:
        """Report a store that stays behind, once, and its recovery, once."""
        with self._lock:
            missed = len(self._missed[role])
            since = self._behind_since[role]
            if not missed:
                self._behind_since[role] = None
            recovered = not missed and role in self._degraded
            degraded = (
                missed > 0
                and since is not None
                and role not in self._degraded
                and self._clock.monotonic() - since >= self._degraded_after
            )
            if recovered:
                self._degraded.discard(role)
            if degraded:
                self._degraded.add(role)
        if degraded and since is not None:
            minutes = (self._clock.monotonic() - since) / 60
            reason = self._last_error.get(role, "it has not answered since")
            self.events.emit(
                Event(
                    EventKind.STORE_DEGRADED,
                    Severity.WARNING,
                    f"{role}_store",
                    f"the {role} store has missed writes of {missed} run(s) for "
                    f"{minutes:.0f} min and cannot be caught up yet: {reason}",
                    details={"missed_runs": missed},
                )
            )
        elif recovered:
            self.events.emit(
                Event(
                    EventKind.STORE_DEGRADED,
                    Severity.RESOLVED,
                    f"{role}_store",
                    f"the {role} store has caught up with every write it missed",
                )
            )

    def _catch_up(self, role: StoreRole, *, force: bool = False) -> frozenset[str]:
        target = self._stores[role]
        other = StoreRole.BACKUP if role is StoreRole.PRIMARY else StoreRole.PRIMARY
        source = self._stores[other]
        if not (target.can(Capability.REPLICATION) and source.can(Capability.REPLICATION)):
            return frozenset()
        if target.breaker.state is BreakerState.OPEN and not force:
            self._last_error[role] = "its circuit breaker is open"
            return frozenset()
        with self._lock:
            noted = dict(self._missed[role])
        done: set[str] = set()
        keys = sorted(noted)
        for start in range(0, len(keys), CATCH_UP_KEYS):
            chunk = keys[start : start + CATCH_UP_KEYS]
            try:
                records = export_runs(source.store, chunk)
            except StoreError as exc:
                self._last_error[role] = f"reading the {source.role} store failed: {exc}"
                log.warning("cannot catch up the %s store yet: %s", role, self._last_error[role])
                break
            try:
                if force:
                    target.store.import_records(records)
                else:
                    target.call(_importer(records))
            except StoreError as exc:
                self._last_error[role] = str(exc)
                log.warning("catching up the %s store failed: %s", role, exc)
                break
            done.update(chunk)
        if done:
            with self._lock:
                missed = self._missed[role]
                for run_key in done:
                    # Noted again while it was copied: that write may not be in the copy.
                    if missed.get(run_key) == noted[run_key]:
                        del missed[run_key]
            self._counters.add(f"replayed.{role}", len(done))
            log.info("caught up the %s store on %d run key(s)", role, len(done))
        return frozenset(done)

    def wake(self) -> None:
        """Run the next catch-up now rather than at the next interval."""
        self._wake.set()

    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="phasegate-replicator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread and wait for it (bounded)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if any(self.missed(role) for role in StoreRole):
                try:
                    self.run_once()
                except Exception as exc:  # noqa: BLE001 - alerted by run_once; keep going
                    log.warning(
                        "the replicator failed: unexpected %s (alerted); it will try again",
                        type(exc).__name__,
                    )
