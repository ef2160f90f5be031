"""phasegate's exceptions, one tree so callers can catch at the level they mean.

::

    PhasegateError
    ├── ConfigError                 the pipeline file is wrong (names file, key, expectation)
    │   └── MissingDriverError      a URL needs a driver that is not installed (names the extra)
    ├── ValidationError             a completion or request is wrong (names the field)
    ├── StoreError                  a store refused an operation for good (not retried)
    │   ├── TransientStoreError     the store could not be reached or was busy (retried)
    │   │   └── StoreUnavailable    skipped: its circuit breaker is open
    │   └── BothStoresFailed        dual-write failed on both stores: nothing acknowledged
    ├── DeliveryError               a trigger could not be delivered (permanent)
    │   └── TransientDeliveryError  the transport failed in a way worth retrying
    └── CircuitOpenError            a call was refused because its breaker is open

:func:`describe_error` is the one table from each of them to what users see: the
CLI's exit code, the HTTP status and error code, the field and a message with no
secret in it. The CLI's ``main`` and the service's exception handler both use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class PhasegateError(Exception):
    """Base class of every error phasegate raises on purpose."""


class ConfigError(PhasegateError):
    """The pipeline file (or another configuration source) is invalid."""


class UsageError(ConfigError):
    """A command was given arguments it cannot work with (a file it cannot read, options
    that exclude each other); exit 2, as a configuration error."""


class MissingDriverError(ConfigError):
    """A store or transport URL needs a driver that is not installed."""

    def __init__(self, scheme: str, driver: str, extra: str) -> None:
        super().__init__(f"{scheme}:// needs the {driver} driver: pip install 'phasegate[{extra}]'")
        self.scheme = scheme
        self.driver = driver
        self.extra = extra


class ValidationError(PhasegateError):
    """Input was rejected; ``field`` names what was wrong (``""`` when it is the whole input)."""

    def __init__(self, field: str, message: str, *, code: str = "invalid") -> None:
        super().__init__(f"{field}: {message}" if field else message)
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


# -- what users see ------------------------------------------------------------------------

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_STORES_DOWN = 0, 1, 2, 3

# ValidationError codes that mean "the request itself is malformed" (400) rather than
# "a field is wrong" (422).
_MALFORMED_CODES = frozenset({"malformed_body", "malformed_json", "malformed_envelope"})


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """How one error is shown: exit code, HTTP status, error code, field and message.

    ``message`` is what a remote client is told (the HTTP body); ``detail`` is what
    the operator at the command line is told (it may name the stores' own errors).
    Both have their secrets masked. ``unexpected`` errors mean a bug or a broken
    deployment rather than a bad request: the service answers them with a generic
    message and raises a critical ``unexpected_error`` event.
    """

    exit_code: int
    http_status: int
    code: str
    field: str | None
    message: str
    detail: str
    label: str
    unexpected: bool = False

    @property
    def cli_line(self) -> str:
        """The line the CLI prints on stderr, e.g. ``rejected: run_key: ...``."""
        return f"{self.label}: {self.detail}"

    def to_dict(self) -> dict[str, str | None]:
        """The HTTP error body's ``error`` object: ``code``, ``message``, ``field``."""
        return {"code": self.code, "message": self.message, "field": self.field}


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One row of :data:`ERROR_MAP`; ``code`` may depend on the exception."""

    exit_code: int
    http_status: int
    code: str
    label: str
    unexpected: bool = False
    public_message: str | None = None


ERROR_MAP: dict[type[PhasegateError], ErrorSpec] = {
    ValidationError: ErrorSpec(EXIT_REJECTED, 422, "invalid", "rejected"),
    MissingDriverError: ErrorSpec(
        EXIT_USAGE, 500, "missing_driver", "configuration error", unexpected=True
    ),
    UsageError: ErrorSpec(EXIT_USAGE, 500, "config_error", "usage error", unexpected=True),
    ConfigError: ErrorSpec(EXIT_USAGE, 500, "config_error", "configuration error", unexpected=True),
    BothStoresFailed: ErrorSpec(
        EXIT_STORES_DOWN,
        503,
        "stores_unavailable",
        "stores unavailable",
        public_message="neither store answered; nothing was acknowledged, retry later",
    ),
    TransientStoreError: ErrorSpec(
        EXIT_STORES_DOWN,
        503,
        "stores_unavailable",
        "store unavailable",
        public_message="a store is unavailable; nothing was acknowledged, retry later",
    ),
    StoreError: ErrorSpec(EXIT_REJECTED, 500, "internal", "store error", unexpected=True),
    DeliveryError: ErrorSpec(EXIT_REJECTED, 502, "delivery_failed", "not delivered"),
    CircuitOpenError: ErrorSpec(EXIT_STORES_DOWN, 503, "unavailable", "unavailable"),
    PhasegateError: ErrorSpec(EXIT_REJECTED, 500, "internal", "error", unexpected=True),
}
"""From each exception class to how it is shown; :func:`describe_error` uses the most
specific row along the exception's class hierarchy."""

UNEXPECTED_MESSAGE = "internal error; it has been logged and alerted"


def describe_error(exc: BaseException, scrub: Callable[[str], str] | None = None) -> ErrorInfo:
    """How ``exc`` is shown to users (``scrub`` masks secrets; see ``phasegate.redact``).

    Anything that is not a :class:`PhasegateError` is unexpected: exit 1, HTTP 500.
    """
    spec = next(
        (ERROR_MAP[cls] for cls in type(exc).__mro__ if cls in ERROR_MAP),
        ErrorSpec(EXIT_REJECTED, 500, "internal", "error", unexpected=True),
    )
    if scrub is None:
        from phasegate.redact import SCRUBBER  # noqa: PLC0415 - redact imports nothing of ours

        scrub = SCRUBBER.scrub
    detail = scrub(str(exc) or type(exc).__name__)
    unexpected = spec.unexpected or not isinstance(exc, PhasegateError)
    if isinstance(exc, ValidationError):
        status = 400 if exc.code in _MALFORMED_CODES else 422
        return ErrorInfo(
            spec.exit_code,
            status,
            exc.code,
            exc.field or None,
            scrub(exc.message),
            detail,
            spec.label,
        )
    message = UNEXPECTED_MESSAGE if unexpected else (spec.public_message or detail)
    return ErrorInfo(
        exit_code=spec.exit_code,
        http_status=spec.http_status,
        code=spec.code,
        field=None,
        message=message,
        detail=detail,
        label=spec.label,
        unexpected=unexpected,
    )
