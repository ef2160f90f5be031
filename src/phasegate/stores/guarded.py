"""One store behind its own circuit breaker and retry policy, counting what happens.

A :class:`GuardedStore` raises phasegate's store errors like any store does: a skipped
call (breaker open) raises :class:`~phasegate.errors.StoreUnavailable`, a call that
failed all its retries raises its last error. The retry policy's tenacity object is
built once; a half-open breaker gets exactly one trial call, never a retried one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from enum import StrEnum
from typing import Any, TypeVar

import tenacity

from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.errors import StoreError, StoreUnavailable, TransientStoreError
from phasegate.model import Completion, PhaseRun
from phasegate.resilience.breaker import CircuitBreaker, Permit
from phasegate.resilience.retry import RetryPolicy, is_transient
from phasegate.stores.base import Capability, ClaimsAfter, Store

log = logging.getLogger(__name__)

T = TypeVar("T")
Answer = Mapping[PhaseRun, frozenset[str]]


class StoreRole(StrEnum):
    """Which of the two stores."""

    PRIMARY = "primary"
    BACKUP = "backup"


class Counters:
    """Thread-safe counters shared by the parts of a tracker (``retries.primary``, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, key: str, amount: int = 1) -> None:
        """Add ``amount`` to ``key``."""
        with self._lock:
            self._counts[key] += amount

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)


class GuardedStore:
    """A store with its breaker, retry policy and counters; calls raise on failure."""

    def __init__(
        self,
        store: Any,
        role: StoreRole,
        *,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
        counters: Counters,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.role = role
        self.policy = policy
        self.breaker = breaker
        self._counters = counters
        # A store with its own writer takes batches on its queue (looked up once: a
        # runtime protocol check per call would cost more than the write's bookkeeping).
        self._submit = getattr(store, "submit_completions", None)
        self._capabilities = frozenset(store.capabilities)
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.attempts),
            wait=policy.wait(rng or random.Random()),
            retry=tenacity.retry_if_exception(is_transient),
            sleep=clock.sleep,
            reraise=True,
            before_sleep=self._on_retry,
        )

    @property
    def name(self) -> str:
        """The wrapped store's name."""
        return str(self.store.name)

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The wrapped store's capabilities."""
        return self._capabilities

    def can(self, capability: Capability) -> bool:
        """Whether the wrapped store declares ``capability``."""
        return capability in self.capabilities

    def _on_retry(self, state: tenacity.RetryCallState) -> None:
        self._counters.add(f"retries.{self.role}")
        outcome = state.outcome
        log.info(
            "%s store write failed (attempt %d, %s); retrying in %.2fs",
            self.role,
            state.attempt_number,
            outcome.exception() if outcome is not None else None,
            state.upcoming_sleep,
        )

    def _acquire(self) -> Permit:
        permit = self.breaker.try_acquire()
        if permit is None:
            self._counters.add(f"writes.{self.role}.skipped")
            raise StoreUnavailable(
                f"{self.role} store skipped: circuit open "
                f"(next trial in {self.breaker.retry_in():.0f}s)"
            )
        return permit

    def run(self, permit: Permit, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` under ``permit``: retried unless it is a half-open trial."""
        try:
            value = self._attempts(permit, attempt)
        except TransientStoreError:
            self.breaker.record_failure(permit)
            self._counters.add(f"writes.{self.role}.failed")
            raise
        except StoreError:
            self.breaker.release(permit)
            self._counters.add(f"writes.{self.role}.failed")
            raise
        except BaseException:
            self.breaker.release(permit)
            raise
        self.breaker.record_success(permit)
        self._counters.add(f"writes.{self.role}.ok")
        return value

    def _attempts(self, permit: Permit, attempt: Callable[[], T]) -> T:
        """The first attempt runs plainly; only its transient failure starts the retry
        policy, which sees that failure as attempt 1 (tenacity's bookkeeping per call
        cost more than the write it guarded)."""
        try:
            return attempt()
        except TransientStoreError as error:
            if permit.trial:
                raise
            first: list[BaseException] = [error]

        def again() -> T:
            if first:
                raise first.pop()
            return attempt()

        return self._retrying(again)

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(store)`` under the breaker with retries; raise what it finally raises."""
        permit = self._acquire()
        return self.run(permit, lambda: fn(self.store))

    def begin_completions(
        self,
        completions: Sequence[Completion],
        pool: Callable[..., Future[Any]],
        then: ClaimsAfter | None = None,
    ) -> PendingWrite:
        """Start writing a batch now; :meth:`PendingWrite.result` waits (and retries).

        A store with its own writer takes the batch on its queue; any other store's first
        attempt runs on ``pool`` so that two stores' writes overlap. ``then`` goes with
        the first attempt to a store that claims after its writes (a retry is written
        without it: see ``SqlStore.submit_completions``).
        """
        try:
            permit = self._acquire()
        except StoreUnavailable as exc:
            return PendingWrite(self, None, None, completions, exc)
        try:
            if self._submit is not None and then is not None:
                future: Future[Any] = self._submit(completions, then)
            elif self._submit is not None:
                future = self._submit(completions)
            else:
                future = pool(self.store.record_completions, completions)
        except BaseException as exc:  # noqa: BLE001 - handed to result(), which classifies it
            future = Future()
            future.set_exception(exc)
        return PendingWrite(self, permit, future, completions, None)


class PendingWrite:
    """A batch write under way on one guarded store."""

    def __init__(
        self,
        guarded: GuardedStore,
        permit: Permit | None,
        first: Future[Any] | None,
        completions: Sequence[Completion],
        refused: StoreError | None,
    ) -> None:
        self._guarded = guarded
        self._permit = permit
        self._first = first
        self._completions = completions
        self._refused = refused
        self._settling = threading.Lock()
        self._outcome: tuple[bool, Answer | None, BaseException | None] | None = None

    def result(self) -> tuple[bool, Answer | None, BaseException | None]:
        """``(ok, answer, error)``: the first attempt's outcome, retried as the policy says.
        Settled once: a second caller (a cancelled caller's follow-up, while the first
        one's thread still retries) waits for the same outcome, not for retries of its own."""
        with self._settling:
            if self._outcome is None:
                self._outcome = self._settle()
            return self._outcome

    def _settle(self) -> tuple[bool, Answer | None, BaseException | None]:
        if self._refused is not None or self._permit is None or self._first is None:
            return False, None, self._refused
        first: list[Future[Any]] = [self._first]
        store = self._guarded.store

        def attempt() -> Answer:
            if first:
                answer: Answer = first.pop().result()
                return answer
            retried: Answer = store.record_completions(self._completions)
            return retried

        try:
            return True, self._guarded.run(self._permit, attempt), None
        except StoreError as exc:
            return False, None, exc


def settle_all(
    writes: Sequence[PendingWrite],
) -> list[tuple[bool, Answer | None, BaseException | None]]:
    """:meth:`PendingWrite.result` of each write, the caller woken once: when every first
    attempt is done, not once per store (each wake-up of a waiting thread costs as much
    as a good part of the write)."""
    pending = [w._first for w in writes if w._first is not None and not w._first.done()]
    if len(pending) > 1:
        latch = threading.Lock()
        latch.acquire()
        remaining = [len(pending)]
        count = threading.Lock()

        def one_done(_first: Future[Any]) -> None:
            with count:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                latch.release()

        for first in pending:
            first.add_done_callback(one_done)
        latch.acquire()
    return [w.result() for w in writes]


async def wait_all(
    writes: Sequence[PendingWrite],
) -> list[tuple[bool, Answer | None, BaseException | None]]:
    """:meth:`PendingWrite.result` of each write, for an event loop: the first attempts are
    awaited without blocking it, with one wake-up of the loop once all of them are done
    (the writers answer on their own threads); only a failed first attempt's retries
    (which sleep) move to a thread."""
    firsts = [w._first for w in writes if w._first is not None]
    pending = [first for first in firsts if not first.done()]
    if pending:
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[None] = loop.create_future()
        remaining = [len(pending)]
        lock = threading.Lock()

        def wake(_settled: asyncio.Future[None]) -> None:
            if not _settled.done():
                _settled.set_result(None)

        def one_done(_first: Future[Any]) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last and not loop.is_closed():  # as asyncio.wrap_future: a closed loop waits no more
                loop.call_soon_threadsafe(wake, settled)

        for first in pending:
            first.add_done_callback(one_done)
        await settled
    if any(first.exception() is not None for first in firsts):  # classified in result()
        return await asyncio.to_thread(lambda: [w.result() for w in writes])
    return [w.result() for w in writes]


def guard(
    store: Store,
    role: StoreRole,
    *,
    policy: RetryPolicy,
    breaker_reset: float,
    counters: Counters,
    clock: Clock,
    rng: random.Random | None,
) -> GuardedStore:
    """A :class:`GuardedStore` with a breaker named after its role."""
    return GuardedStore(
        store,
        role,
        policy=policy,
        breaker=CircuitBreaker(f"{role}_store", reset_timeout=breaker_reset, clock=clock),
        counters=counters,
        clock=clock,
        rng=rng,
    )
