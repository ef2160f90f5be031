"""Exponential backoff with jitter, on tenacity, retrying only transient errors.

tenacity supplies the loop; what it lacks is jitter with an injected random source
(its strategies use the global ``random``) and decorrelated jitter, so those are here.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar, cast

import tenacity
from tenacity.wait import wait_base

from phasegate.errors import TransientDeliveryError, TransientStoreError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class Jitter(StrEnum):
    """How a wait is spread so that many retrying clients do not retry in step.

    ``full``: uniform in ``[0, min(max, base·2ⁿ)]`` (AWS "full jitter").
    ``decorrelated``: uniform in ``[base, 3·previous]``, capped (AWS "decorrelated jitter").
    ``additive``: ``min(max, base·2ⁿ) + uniform(0, base)``, capped (tenacity's
    ``wait_exponential_jitter``): never shorter than plain exponential backoff, so the
    retry window of the store defaults covers at least 3 s and absorbs short outages.
    """

    FULL = "full"
    DECORRELATED = "decorrelated"
    ADDITIVE = "additive"


class _FullJitter(wait_base):
    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base, self.cap, self.rng = base, cap, rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** (retry_state.attempt_number - 1))
        return self.rng.uniform(0, ceiling)


class _DecorrelatedJitter(wait_base):
    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base, self.cap, self.rng = base, cap, rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        # tenacity keeps the previous wait in ``upcoming_sleep`` until it computes the next.
        previous = retry_state.upcoming_sleep or self.base
        return min(self.cap, self.rng.uniform(self.base, previous * 3))


class _AdditiveJitter(wait_base):
    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base, self.cap, self.rng = base, cap, rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exponential = self.base * 2.0 ** (retry_state.attempt_number - 1)
        return min(self.cap, exponential + self.rng.uniform(0, self.base))


_STRATEGIES: dict[Jitter, Callable[[float, float, random.Random], wait_base]] = {
    Jitter.FULL: _FullJitter,
    Jitter.DECORRELATED: _DecorrelatedJitter,
    Jitter.ADDITIVE: _AdditiveJitter,
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How patiently to retry: ``attempts`` in all, waits from ``base`` up to ``max_delay``."""

    attempts: int = 3
    base: float = 1.0
    max_delay: float = 10.0
    jitter: Jitter = Jitter.ADDITIVE

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base < 0 or self.max_delay < 0:
            raise ValueError("base and max_delay must not be negative")

    def wait(self, rng: random.Random) -> wait_base:
        """The tenacity wait strategy of this policy, drawing from ``rng``."""
        return _STRATEGIES[Jitter(self.jitter)](self.base, self.max_delay, rng)

    def scaled(self, factor: float) -> RetryPolicy:
        """The same policy with every wait multiplied by ``factor`` (the demo runs fast)."""
        return RetryPolicy(self.attempts, self.base * factor, self.max_delay * factor, self.jitter)


PRIMARY_WRITE_POLICY = RetryPolicy(attempts=3, base=1.0, max_delay=10.0)
BACKUP_WRITE_POLICY = RetryPolicy(attempts=3, base=1.0, max_delay=15.0)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying; programming errors and refusals are not."""
    return isinstance(exc, TransientStoreError | TransientDeliveryError)


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    outcome = retry_state.outcome
    exc = outcome.exception() if outcome is not None else None
    log.info(
        "retrying %s after attempt %d failed (%s); waiting %.2fs",
        getattr(retry_state.fn, "__qualname__", "call"),
        retry_state.attempt_number,
        exc,
        retry_state.upcoming_sleep,
    )


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None],
    rng: random.Random | None = None,
    retry_on: Callable[[BaseException], bool] = is_transient,
    on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, a non-retryable error escapes, or attempts run out.

    The last error is re-raised as is, never wrapped.
    """
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=policy.wait(rng or random.Random()),
        retry=tenacity.retry_if_exception(retry_on),
        sleep=sleep,
        reraise=True,
        before_sleep=on_retry or _log_retry,
    )
    return retrying(fn)


async def acall_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    retry_on: Callable[[BaseException], bool] = is_transient,
    on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
) -> T:
    """The coroutine form of :func:`call_with_retry`."""
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=policy.wait(rng or random.Random()),
        retry=tenacity.retry_if_exception(retry_on),
        sleep=sleep,
        reraise=True,
        before_sleep=on_retry or _log_retry,
    )
    return cast(T, await retrying(fn))


def retry(
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Any] | None = None,
    rng: random.Random | None = None,
    retry_on: Callable[[BaseException], bool] = is_transient,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a function or coroutine function so calls to it are retried by ``policy``."""

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                async def attempt() -> Any:
                    return await fn(*args, **kwargs)  # type: ignore[misc,unused-ignore]

                return await acall_with_retry(
                    attempt,
                    policy,
                    sleep=sleep or asyncio.sleep,
                    rng=rng,
                    retry_on=retry_on,
                )

            return cast(Callable[P, T], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return call_with_retry(
                lambda: fn(*args, **kwargs),
                policy,
                sleep=sleep or _real_sleep,
                rng=rng,
                retry_on=retry_on,
            )

        return wrapper

    return decorate


def _real_sleep(seconds: float) -> None:
    import time  # noqa: PLC0415 - only the real sleep needs it

    time.sleep(seconds)
