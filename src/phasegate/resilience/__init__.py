"""Retry with jitter and circuit breakers: the two tools that keep a flaky store from hurting."""

from phasegate.resilience.breaker import BreakerState, CircuitBreaker, Permit
from phasegate.resilience.retry import (
    BACKUP_WRITE_POLICY,
    PRIMARY_WRITE_POLICY,
    Jitter,
    RetryPolicy,
    acall_with_retry,
    call_with_retry,
    is_transient,
    retry,
)

__all__ = [
    "BACKUP_WRITE_POLICY",
    "PRIMARY_WRITE_POLICY",
    "BreakerState",
    "CircuitBreaker",
    "Jitter",
    "Permit",
    "RetryPolicy",
    "acall_with_retry",
    "call_with_retry",
    "is_transient",
    "retry",
]
