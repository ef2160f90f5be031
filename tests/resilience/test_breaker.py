"""Circuit breaker: closed → open → half-open with one exclusive trial → closed or open."""

from __future__ import annotations

import threading

import pytest

from phasegate.errors import CircuitOpenError
from phasegate.resilience import BreakerState, CircuitBreaker
from phasegate.testing import FakeClock


def boom() -> None:
    raise ConnectionError("down")


def test_a_failed_call_opens_the_breaker_and_later_calls_are_refused(clock: FakeClock) -> None:
    """After the threshold of failures, calls are refused without being made."""
    breaker = CircuitBreaker("store", clock=clock)
    with pytest.raises(ConnectionError):
        breaker.call(boom)
    assert breaker.state is BreakerState.OPEN
    calls = []
    with pytest.raises(CircuitOpenError, match=r"next trial in 30\.0s"):
        breaker.call(lambda: calls.append(1))
    assert calls == []
    assert breaker.trips == 1


def test_the_threshold_counts_consecutive_failures(clock: FakeClock) -> None:
    """With threshold 3, two failures and a success keep the breaker closed."""
    breaker = CircuitBreaker("store", failure_threshold=3, clock=clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(boom)
    breaker.call(lambda: None)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(boom)
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(ConnectionError):
        breaker.call(boom)
    assert breaker.state is BreakerState.OPEN


def test_after_the_reset_timeout_exactly_one_trial_goes_through(clock: FakeClock) -> None:
    """Half-open lets one caller in; everyone else is refused until it reports back."""
    breaker = CircuitBreaker("store", reset_timeout=30, clock=clock)
    with pytest.raises(ConnectionError):
        breaker.call(boom)
    clock.advance(29.9)
    assert breaker.try_acquire() is None
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    permits = []
    barrier = threading.Barrier(16)

    def grab() -> None:
        barrier.wait()
        permits.append(breaker.try_acquire())

    threads = [threading.Thread(target=grab) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted = [p for p in permits if p is not None]
    assert len(granted) == 1
    assert granted[0].trial


@pytest.mark.parametrize(
    ("trial_ok", "final"), [(True, BreakerState.CLOSED), (False, BreakerState.OPEN)]
)
def test_the_trial_outcome_closes_or_reopens(
    clock: FakeClock, trial_ok: bool, final: BreakerState
) -> None:
    """A successful trial closes the breaker; a failed one opens it for another full wait."""
    breaker = CircuitBreaker("store", reset_timeout=30, clock=clock)
    with pytest.raises(ConnectionError):
        breaker.call(boom)
    clock.advance(30)
    if trial_ok:
        breaker.call(lambda: None)
    else:
        with pytest.raises(ConnectionError):
            breaker.call(boom)
    assert breaker.state is final
    if not trial_ok:
        assert breaker.retry_in() == pytest.approx(30)


def test_listeners_hear_every_transition(clock: FakeClock) -> None:
    """The listener gets (name, old, new) for open, half-open and closed."""
    seen: list[tuple[str, str, str]] = []
    breaker = CircuitBreaker("primary_store", reset_timeout=5, clock=clock)
    breaker.add_listener(lambda name, old, new: seen.append((name, old.value, new.value)))
    with pytest.raises(ConnectionError):
        breaker.call(boom)
    clock.advance(5)
    breaker.call(lambda: None)
    assert seen == [
        ("primary_store", "closed", "open"),
        ("primary_store", "open", "half_open"),
        ("primary_store", "half_open", "closed"),
    ]


def test_errors_that_do_not_count_leave_the_breaker_alone(clock: FakeClock) -> None:
    """A caller's own mistake (not counted) neither trips nor consumes the trial."""
    breaker = CircuitBreaker("store", clock=clock)
    with pytest.raises(ValueError, match="bad"):
        breaker.call(
            lambda: (_ for _ in ()).throw(ValueError("bad")),
            counts=lambda e: isinstance(e, ConnectionError),
        )
    assert breaker.state is BreakerState.CLOSED
