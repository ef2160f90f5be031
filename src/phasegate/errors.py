"""phasegate's exceptions, one tree so callers can catch at the level they mean.

::

    PhasegateError
    ├── ConfigError                 the pipeline file is wrong (names file, key, expectation)
    ├── ValidationError             a completion or request is wrong (names the field)
    ├── StoreError                  a store refused an operation for good (not retried)
    │   ├── TransientStoreError     the store could not be reached or was busy (retried)
    │   │   └── StoreUnavailable    skipped: its circuit breaker is open
    │   └── BothStoresFailed        dual-write failed on both stores: nothing acknowledged
    ├── DeliveryError               a trigger could not be delivered (permanent)
    │   └── TransientDeliveryError  the transport failed in a way worth retrying
    └── CircuitOpenError            a call was refused because its breaker is open
"""

from __future__ import annotations


class PhasegateError(Exception):
    """Base class of every error phasegate raises on purpose."""


class ConfigError(PhasegateError):
    """The pipeline file (or another configuration source) is invalid."""


class ValidationError(PhasegateError):
    """Input was rejected; ``field`` names what was wrong."""

    def __init__(self, field: str, message: str, *, code: str = "invalid") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code


class StoreError(PhasegateError):
    """A store operation failed in a way that retrying will not fix."""


class TransientStoreError(StoreError):
    """A store operation failed in a way that a retry may fix (connection, lock, timeout)."""


class StoreUnavailable(TransientStoreError):
    """The store was not tried because its circuit breaker is open."""


class BothStoresFailed(StoreError):
    """Neither the primary nor the backup store accepted a write."""

    def __init__(
        self, operation: str, primary: BaseException | None, backup: BaseException | None
    ) -> None:
        super().__init__(
            f"{operation}: both stores failed "
            f"(primary: {_describe(primary)}; backup: {_describe(backup)})"
        )
        self.operation = operation
        self.primary = primary
        self.backup = backup


class DeliveryError(PhasegateError):
    """A trigger could not be delivered and retrying will not help."""


class TransientDeliveryError(DeliveryError):
    """A trigger delivery failed in a way worth retrying."""


class CircuitOpenError(PhasegateError):
    """A call was refused because the circuit breaker guarding it is open."""

    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(f"circuit {name!r} is open; next trial in {retry_in:.1f}s")
        self.name = name
        self.retry_in = retry_in


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "not attempted"
    return f"{type(exc).__name__}: {exc}"
