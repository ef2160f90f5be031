"""A circuit breaker: stop calling a store that keeps failing, re-check it now and then."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.errors import CircuitOpenError

log = logging.getLogger(__name__)

T = TypeVar("T")

BreakerListener = Callable[[str, "BreakerState", "BreakerState"], None]


class BreakerState(StrEnum):
    """``closed``: calls go through. ``open``: calls are refused. ``half_open``: one trial."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call; ``trial`` when it is the single half-open probe."""

    trial: bool


class CircuitBreaker:
    """Closed / open / half-open breaker with one exclusive trial call and an injected clock.

    It opens after ``failure_threshold`` consecutive failed calls (a "call" here is a
    whole retried operation), refuses calls for ``reset_timeout`` seconds, then lets
    exactly one trial call through: its success closes the breaker, its failure opens it
    for another ``reset_timeout``.
    """

    def __init__(
        self,
        name: str,
        *,
        reset_timeout: float = 30.0,
        failure_threshold: int = 1,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.name = name
        self.reset_timeout = reset_timeout
        self.failure_threshold = failure_threshold
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._listeners: list[BreakerListener] = []
        self.trips = 0

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose wait is over reads as half-open)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._wait_over():
                return BreakerState.HALF_OPEN
            return self._state

    def add_listener(self, listener: BreakerListener) -> None:
        """Call ``listener(name, old, new)`` on every state change (metrics and alerts)."""
        self._listeners.append(listener)

    def retry_in(self) -> float:
        """Seconds until the next trial is allowed (0 when calls may go through)."""
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.reset_timeout - self._clock.monotonic())

    def try_acquire(self) -> Permit | None:
        """Leave for one call, or ``None`` when the breaker refuses it."""
        changes: list[tuple[BreakerState, BreakerState]] = []
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return Permit(trial=False)
            if self._state is BreakerState.OPEN and self._wait_over():
                changes.append(self._move(BreakerState.HALF_OPEN))
            if self._state is BreakerState.HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                permit: Permit | None = Permit(trial=True)
            else:
                permit = None
        self._notify(changes)
        return permit

    def record_success(self, permit: Permit) -> None:
        """The permitted call succeeded."""
        changes: list[tuple[BreakerState, BreakerState]] = []
        with self._lock:
            self._failures = 0
            if permit.trial:
                self._trial_in_flight = False
            if self._state is not BreakerState.CLOSED:
                changes.append(self._move(BreakerState.CLOSED))
        self._notify(changes)

    def record_failure(self, permit: Permit) -> None:
        """The permitted call failed (after its retries)."""
        changes: list[tuple[BreakerState, BreakerState]] = []
        with self._lock:
            if permit.trial:
                self._trial_in_flight = False
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
            ):
                self._opened_at = self._clock.monotonic()
                self.trips += 1
                changes.append(self._move(BreakerState.OPEN))
        self._notify(changes)

    def release(self, permit: Permit) -> None:
        """Give back a permit whose call said nothing about the store's health."""
        if permit.trial:
            with self._lock:
                self._trial_in_flight = False

    def call(self, fn: Callable[[], T], *, counts: Callable[[BaseException], bool] = bool) -> T:
        """Run ``fn`` under the breaker; errors for which ``counts`` is true are failures."""
        permit = self.try_acquire()
        if permit is None:
            raise CircuitOpenError(self.name, self.retry_in())
        try:
            result = fn()
        except BaseException as exc:
            if counts(exc):
                self.record_failure(permit)
            else:
                self.release(permit)
            raise
        self.record_success(permit)
        return result

    def _wait_over(self) -> bool:
        return self._clock.monotonic() - self._opened_at >= self.reset_timeout

    def _move(self, new: BreakerState) -> tuple[BreakerState, BreakerState]:
        old, self._state = self._state, new
        return (old, new)

    def _notify(self, changes: list[tuple[BreakerState, BreakerState]]) -> None:
        for old, new in changes:
            log.log(
                logging.WARNING if new is BreakerState.OPEN else logging.INFO,
                "circuit %s: %s -> %s",
                self.name,
                old.value,
                new.value,
            )
            for listener in self._listeners:
                listener(self.name, old, new)
