"""Retry: exponential backoff with jitter, only for transient errors, sync and async."""

from __future__ import annotations

import asyncio
import random

import pytest

from phasegate.errors import StoreError, TransientDeliveryError, TransientStoreError
from phasegate.resilience import Jitter, RetryPolicy, acall_with_retry, call_with_retry, retry


class Flaky:
    """Fails ``failures`` times with ``error`` then returns ``"ok"``."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or TransientStoreError("connection reset")
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


@pytest.mark.parametrize("jitter", list(Jitter))
def test_transient_errors_are_retried_until_success(jitter: Jitter) -> None:
    """Two transient failures then success: three calls, two waits, the result returned."""
    sleeps: list[float] = []
    flaky = Flaky(2)
    result = call_with_retry(
        flaky, RetryPolicy(attempts=3, jitter=jitter), sleep=sleeps.append, rng=random.Random(7)
    )
    assert (result, flaky.calls, len(sleeps)) == ("ok", 3, 2)


def test_the_last_error_is_reraised_when_attempts_run_out() -> None:
    """After the last attempt the original exception escapes, unwrapped."""
    flaky = Flaky(5, TransientDeliveryError("HTTP 503"))
    with pytest.raises(TransientDeliveryError, match="HTTP 503"):
        call_with_retry(flaky, RetryPolicy(attempts=3), sleep=lambda _: None)
    assert flaky.calls == 3


@pytest.mark.parametrize("error", [StoreError("constraint"), TypeError("bug"), KeyError("k")])
def test_programming_and_permanent_errors_are_not_retried(error: BaseException) -> None:
    """Only transient errors are retried; anything else fails on the first call."""
    flaky = Flaky(1, error)
    with pytest.raises(type(error)):
        call_with_retry(flaky, RetryPolicy(attempts=5), sleep=lambda _: None)
    assert flaky.calls == 1


@pytest.mark.parametrize("seed", range(50))
def test_full_jitter_stays_within_the_exponential_ceiling(seed: int) -> None:
    """Full jitter waits between 0 and min(max, base·2ⁿ)."""
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=6, base=1.0, max_delay=10.0, jitter=Jitter.FULL)
    with pytest.raises(TransientStoreError):
        call_with_retry(Flaky(10), policy, sleep=sleeps.append, rng=random.Random(seed))
    for attempt, wait in enumerate(sleeps, start=1):
        assert 0 <= wait <= min(10.0, 2 ** (attempt - 1))


@pytest.mark.parametrize("seed", range(50))
def test_decorrelated_jitter_grows_from_the_previous_wait(seed: int) -> None:
    """Decorrelated jitter waits between base and 3× the previous wait, capped."""
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=6, base=1.0, max_delay=10.0, jitter=Jitter.DECORRELATED)
    with pytest.raises(TransientStoreError):
        call_with_retry(Flaky(10), policy, sleep=sleeps.append, rng=random.Random(seed))
    previous = 1.0
    for wait in sleeps:
        assert 1.0 <= wait <= min(10.0, previous * 3)
        previous = wait


@pytest.mark.parametrize("seed", range(50))
def test_additive_jitter_never_waits_less_than_plain_backoff(seed: int) -> None:
    """The store default waits base·2ⁿ plus up to base: a 3-attempt window covers ≥ 3 s."""
    sleeps: list[float] = []
    with pytest.raises(TransientStoreError):
        call_with_retry(Flaky(10), RetryPolicy(), sleep=sleeps.append, rng=random.Random(seed))
    assert len(sleeps) == 2
    assert 1.0 <= sleeps[0] <= 2.0
    assert 2.0 <= sleeps[1] <= 3.0
    assert sum(sleeps) >= 3.0


def test_jitter_spreads_waits_between_clients() -> None:
    """Different random streams give different waits, so clients do not retry in step."""
    firsts = set()
    for seed in range(20):
        sleeps: list[float] = []
        with pytest.raises(TransientStoreError):
            call_with_retry(
                Flaky(10),
                RetryPolicy(jitter=Jitter.FULL),
                sleep=sleeps.append,
                rng=random.Random(seed),
            )
        firsts.add(round(sleeps[0], 6))
    assert len(firsts) == 20


def test_async_retry_uses_the_injected_async_sleep() -> None:
    """The coroutine form retries the same way and awaits the injected sleep."""
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    flaky = Flaky(2)

    async def call() -> str:
        return flaky()

    assert asyncio.run(acall_with_retry(call, RetryPolicy(), sleep=fake_sleep)) == "ok"
    assert len(sleeps) == 2


def test_the_decorator_wraps_sync_and_async_functions() -> None:
    """``@retry(policy)`` works on both plain and coroutine functions."""
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    sync_flaky, async_flaky = Flaky(1), Flaky(1)

    @retry(RetryPolicy(), sleep=waits.append)
    def sync_call(x: int) -> str:
        return f"{sync_flaky()}{x}"

    @retry(RetryPolicy(), sleep=fake_sleep)
    async def async_call(x: int) -> str:
        return f"{async_flaky()}{x}"

    assert sync_call(1) == "ok1"
    assert asyncio.run(async_call(2)) == "ok2"
    assert len(waits) == 2


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"base": -1.0}])
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    """A policy that cannot work is a clear error."""
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
