"""Checking a completion report's values, once, in the library: each error names the field."""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from phasegate.clock import Clock
from phasegate.config import Pipeline
from phasegate.errors import ValidationError
from phasegate.model import Completion, Status, frozen_metadata
from phasegate.reports import CompletionReport

MAX_METADATA_BYTES = 16 * 1024
MAX_CORRELATION_ID_LENGTH = 256


def build_completion(
    pipeline: Pipeline, clock: Clock, report: CompletionReport, occurred_at: datetime | None = None
) -> Completion:
    """Check a report and build its :class:`Completion`; a ValidationError names the field."""
    phase, run_key, processor = report.phase, report.run_key, report.processor
    status, correlation_id, metadata = report.status, report.correlation_id, report.metadata
    phase_name = _string("phase", phase)
    definition = pipeline.phase(phase_name)
    run = pipeline.validate_run_key(_string("run_key", run_key))
    processor_name = _string("processor", processor)
    if processor_name not in definition.all_processors:
        raise ValidationError(
            "processor",
            f"{processor_name!r} is not expected in phase {phase_name!r}; "
            f"expected one of: {', '.join(definition.all_processors)}",
            code="unknown_processor",
        )
    status_text = _string("status", status)
    try:
        status_value = Status(status_text)
    except ValueError:
        raise ValidationError(
            "status", f"{status_text!r}; expected one of: success, failed"
        ) from None
    if correlation_id is None or correlation_id == "":
        correlation = new_correlation_id()
    else:
        correlation = _correlation(_string("correlation_id", correlation_id))
    decoded, encoded = _metadata(metadata)
    return Completion(
        phase=phase_name,
        run_key=run,
        processor=processor_name,
        status=status_value,
        occurred_at=occurred_at or clock.now(),
        correlation_id=correlation,
        metadata=frozen_metadata(decoded),
        metadata_encoded=encoded,
    )


def new_correlation_id() -> str:
    """A random version-4 UUID as 32 hex digits.

    A correlation id ties a report to its trigger in logs; it is unique, not secret. So
    its bits come from :mod:`random` (seeded from the OS and reseeded in every forked
    worker), not a system call per report, and no ``uuid.UUID`` object is built.
    """
    n = random.getrandbits(128)
    n = (n & ~(0xF000 << 64) | (4 << 76)) & ~(0xC000 << 48) | (0x8000 << 48)
    return f"{n:032x}"


_STATUSES = {status.value: status for status in Status}
_NO_METADATA = frozen_metadata(None)


class ReportChecker:
    """:func:`build_completion` for one pipeline, with its lookups built once.

    The expected processors of each phase are a set, and run keys already found valid
    are remembered (up to ``known_run_keys``), so a good report costs a few lookups.
    Anything unusual (a wrong type, an unknown name, a new run key that fails its
    pattern) takes the full checks, which name the field.
    """

    def __init__(self, pipeline: Pipeline, clock: Clock, known_run_keys: int = 4096) -> None:
        self._pipeline = pipeline
        self._clock = clock
        self._expected = {phase.name: frozenset(phase.all_processors) for phase in pipeline.phases}
        self._run_keys: set[str] = set()
        self._limit = known_run_keys

    def check(self, report: CompletionReport, occurred_at: datetime | None = None) -> Completion:
        """Check a report and build its :class:`Completion`; a ValidationError names the field."""
        phase, run_key, processor = report.phase, report.run_key, report.processor
        status, correlation_id, metadata = report.status, report.correlation_id, report.metadata
        status_value = _STATUSES.get(status) if type(status) is str else None
        if (
            type(phase) is not str
            or type(processor) is not str
            or processor not in self._expected.get(phase, ())
            or type(run_key) is not str
            or status_value is None
            or not (correlation_id is None or type(correlation_id) is str)
        ):
            return build_completion(self._pipeline, self._clock, report, occurred_at)
        if run_key not in self._run_keys:
            self._pipeline.validate_run_key(run_key)
            if len(self._run_keys) >= self._limit:
                self._run_keys.clear()
            self._run_keys.add(run_key)
        if not correlation_id:
            correlation_id = new_correlation_id()
        else:
            _correlation(correlation_id)
        if metadata is None:
            decoded, encoded = _NO_METADATA, "{}"
        else:
            plain, encoded = _metadata(metadata)
            decoded = frozen_metadata(plain)
        return Completion(
            phase=phase,
            run_key=run_key,
            processor=processor,
            status=status_value,
            occurred_at=occurred_at or self._clock.now(),
            correlation_id=correlation_id,
            metadata=decoded,
            metadata_encoded=encoded,
        )


def _correlation(value: str) -> str:
    """A correlation id goes into logs, alerts and both stores as it came: text without
    control characters (which could forge log lines) or unpaired surrogates (which no
    store can encode), of bounded length. Other unprintable characters (a no-break
    space, a zero-width joiner, a direction mark) are text and stay."""
    if len(value) > MAX_CORRELATION_ID_LENGTH:
        raise ValidationError(
            "correlation_id", f"longer than {MAX_CORRELATION_ID_LENGTH} characters"
        )
    if not value.isprintable() and any(unicodedata.category(c) in _NOT_TEXT for c in value):
        raise ValidationError(
            "correlation_id",
            f"{value!r} contains control characters or unpaired surrogates",
        )
    return value


_NOT_TEXT = frozenset({"Cc", "Cs"})


def _string(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(
            field, f"expected a string, got {json_type(value)}", code="wrong_type"
        )
    if not value:
        raise ValidationError(field, "must not be empty", code="wrong_type")
    return value


# The JSON name of a decoded value's type (``bool`` before ``int``, its base class).
_JSON_TYPES: tuple[tuple[Any, str], ...] = (
    (bool, "boolean"),
    (int | float, "number"),
    (list | tuple, "array"),
    (Mapping, "object"),
    (str, "string"),
)


def json_type(value: object) -> str:
    """What a wrong value is, in JSON's words (``got string``, not ``got str``)."""
    if value is None:
        return "null"
    return next(
        (name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__
    )


def _metadata(value: object) -> tuple[dict[str, Any], str]:
    """The metadata as a plain dict and as the compact JSON stored; checked once."""
    if value is None:
        return {}, "{}"
    if not isinstance(value, Mapping):
        raise ValidationError(
            "metadata", f"expected a JSON object, got {json_type(value)}", code="wrong_type"
        )
    try:
        encoded = json.dumps(dict(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError("metadata", f"not JSON-serialisable: {exc}") from exc
    size = len(encoded.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValidationError(
            "metadata",
            f"{size} bytes of JSON; at most {MAX_METADATA_BYTES} allowed",
            code="too_large",
        )
    if not value:
        return {}, "{}"
    # Decoding what was encoded yields plain JSON types (tuples become lists, ...).
    decoded: dict[str, Any] = json.loads(encoded)
    return decoded, encoded
