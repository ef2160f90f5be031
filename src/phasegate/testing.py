"""Test helpers that ship with phasegate: a fake clock and on-demand store faults.

They are public so that users can test their own pipelines the way phasegate tests
itself, and so the demo can stage an outage on a real store.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from phasegate.errors import TransientStoreError

if TYPE_CHECKING:
    from phasegate.stores.sql import SqlStore

# What a FaultyStore lets through even while failing: identity, not I/O.
_PASSTHROUGH = frozenset({"name", "capabilities", "pipeline", "close", "inner"})


class FakeClock:
    """A clock that only moves when told to; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = start or datetime(2026, 1, 28, 12, 0, tzinfo=UTC)
        self._monotonic = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        """The fake current time."""
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        """The fake monotonic time."""
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._monotonic += seconds

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance time by it, at once."""
        self.sleeps.append(seconds)
        if seconds > 0:
            self.advance(seconds)


class InjectedFault(ConnectionError):
    """The error a :class:`FaultSwitch` raises inside the driver."""


class FaultSwitch:
    """Makes a real SQL store's connection fail on demand, at the driver level.

    Every statement the store sends raises an ``OperationalError`` while the switch is
    on, exactly as a lost database connection would; the store maps it like any other.
    ``fail(seconds)`` turns it on for a while, measured on ``clock``.
    """

    def __init__(self, clock: Any = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._forever = False
        self._until: float | None = None
        self.failures = 0

    def attach(self, store: SqlStore) -> FaultSwitch:
        """Inject this switch's faults into every engine of ``store`` (driver level)."""
        from sqlalchemy import event  # noqa: PLC0415 - only SQL stores need SQLAlchemy here

        for engine in store.engines:
            event.listen(engine, "before_cursor_execute", self._before_execute)
        return self

    def wrap(self, store: Any) -> FaultyStore:
        """Any store, failing transiently on every call while this switch is on."""
        return FaultyStore(store, self)

    def check(self) -> None:
        """Raise the injected fault if the switch is on (counted)."""
        if self.active:
            with self._lock:
                self.failures += 1
            raise TransientStoreError("connection lost (fault injected)")

    def fail(self, seconds: float | None = None) -> None:
        """Fail from now on, or for ``seconds`` of the clock's monotonic time."""
        with self._lock:
            if seconds is None:
                self._forever, self._until = True, None
            else:
                self._forever = False
                self._until = self._monotonic() + seconds

    def heal(self) -> None:
        """Stop failing."""
        with self._lock:
            self._forever, self._until = False, None

    @property
    def active(self) -> bool:
        """Whether statements fail right now."""
        with self._lock:
            return self._forever or (self._until is not None and self._monotonic() < self._until)

    def _monotonic(self) -> float:
        if self._clock is None:
            import time  # noqa: PLC0415 - only a switch without a clock needs real time

            return time.monotonic()
        return float(self._clock.monotonic())

    def _before_execute(self, *_args: Any, **_kwargs: Any) -> None:
        import sqlalchemy as sa  # noqa: PLC0415 - only SQL stores need SQLAlchemy here

        if self.active:
            with self._lock:
                self.failures += 1
            raise sa.exc.OperationalError(
                "injected", None, InjectedFault("connection lost (fault injected)")
            )


class FaultyStore:
    """Wraps any store: every method raises ``TransientStoreError`` while ``switch`` is on.

    The generic counterpart of :meth:`FaultSwitch.attach`, for backends without a
    driver hook; a failing call does not reach the wrapped store at all. A ``submit_*``
    call fails through the future it returns, as a store's writer would.
    """

    def __init__(self, inner: Any, switch: FaultSwitch) -> None:
        self.inner = inner
        self.switch = switch

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self.inner, attribute)
        if attribute in _PASSTHROUGH or not callable(value):
            return value

        @functools.wraps(value)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.switch.check()
            return value(*args, **kwargs)

        @functools.wraps(value)
        def submitted(*args: Any, **kwargs: Any) -> Any:
            # A submit answers through its future, as the real store does.
            try:
                self.switch.check()
            except TransientStoreError as error:
                failed: Future[Any] = Future()
                failed.set_exception(error)
                return failed
            return value(*args, **kwargs)

        return submitted if attribute.startswith("submit_") else guarded

    def __repr__(self) -> str:
        return f"FaultyStore({self.inner!r})"
