"""The shape of a completion report that arrived as a JSON object (HTTP, Pub/Sub, a
batch item): an object, no unknown field, the required ones present. The orchestrator
checks every value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from phasegate.errors import ValidationError

REPORT_FIELDS = ("phase", "run_key", "processor", "status", "correlation_id", "metadata")
REQUIRED_FIELDS = ("phase", "run_key", "processor")
_FIELDS = frozenset(REPORT_FIELDS)
_REQUIRED = frozenset(REQUIRED_FIELDS)


@dataclass(frozen=True, slots=True)
class CompletionReport:
    """A report as received; its values are checked when it is recorded."""

    phase: object
    run_key: object
    processor: object
    status: object = "success"
    correlation_id: object = None
    metadata: object = None


def parse_report(body: object, *, default_correlation_id: str | None = None) -> CompletionReport:
    """The :class:`CompletionReport` in a decoded JSON body; a ValidationError names the field.

    ``default_correlation_id`` is used when the body carries none (a Pub/Sub message id).
    """
    if type(body) is dict and body.keys() <= _FIELDS and body.keys() >= _REQUIRED:
        # The usual shape, told in two set comparisons; anything else is looked at below.
        return CompletionReport(
            body["phase"],
            body["run_key"],
            body["processor"],
            body.get("status", "success"),
            _correlation_id(body, default_correlation_id),
            body.get("metadata"),
        )
    if not isinstance(body, Mapping):
        raise ValidationError("", "body must be a JSON object", code="malformed_body")
    unknown = sorted(str(key) for key in body if key not in REPORT_FIELDS)
    if unknown:
        raise ValidationError(unknown[0], f"unknown field {unknown[0]!r}", code="unknown_field")
    for required in REQUIRED_FIELDS:
        if required not in body:
            raise ValidationError(required, f"{required} is required", code="missing_field")
    return CompletionReport(
        phase=body["phase"],
        run_key=body["run_key"],
        processor=body["processor"],
        status=body.get("status", "success"),
        correlation_id=_correlation_id(body, default_correlation_id),
        metadata=body.get("metadata"),
    )


def _correlation_id(body: Mapping[str, object], default: str | None) -> object:
    """The body's correlation id; ``default`` only where it has none (absent, null or
    empty): a value of the wrong type is the checks' to reject, not to replace."""
    given = body.get("correlation_id")
    return default if given is None or given == "" else given
