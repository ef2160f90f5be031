"""The report checker's quick path answers exactly as the full checks do: the same
completion for a good report, the same error (field, code, message) for a bad one."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

import pytest

from phasegate.config import loads_pipeline
from phasegate.errors import ValidationError
from phasegate.model import Status
from phasegate.reports import CompletionReport, parse_report
from phasegate.testing import FakeClock
from phasegate.validation import ReportChecker, build_completion
from support import PIPELINE_TEXT

PIPELINE = dataclasses.replace(loads_pipeline(PIPELINE_TEXT), run_key_pattern=r"^2026-\d\d-\d\d$")
GOOD: dict[str, Any] = {"phase": "extract", "run_key": "2026-01-28", "processor": "api"}

CASES: list[dict[str, Any]] = [
    GOOD,
    {**GOOD, "status": "failed", "correlation_id": "corr-1", "metadata": {"rows": 3}},
    {**GOOD, "status": Status.FAILED},
    {**GOOD, "correlation_id": ""},
    {**GOOD, "metadata": {}},
    {**GOOD, "phase": "nope"},
    {**GOOD, "phase": 3},
    {**GOOD, "phase": ""},
    {**GOOD, "processor": "clean"},
    {**GOOD, "processor": None},
    {**GOOD, "processor": "api", "phase": "transform"},
    {**GOOD, "run_key": "2025-01-28"},
    {**GOOD, "run_key": "2026-01-28 "},
    {**GOOD, "run_key": ["2026-01-28"]},
    {**GOOD, "run_key": "x" * 300},
    {**GOOD, "run_key": "bad", "processor": "bad"},
    {**GOOD, "status": "done"},
    {**GOOD, "status": ["success"]},
    {**GOOD, "correlation_id": "c" * 257},
    {**GOOD, "correlation_id": 7},
    {**GOOD, "metadata": "rows=3"},
    {**GOOD, "metadata": {"rows": float("nan")}},
    {**GOOD, "metadata": {"blob": "x" * 17000}},
]


def _outcome(build: Any, case: dict[str, Any]) -> Any:
    try:
        completion = build(CompletionReport(**case))
    except ValidationError as exc:
        return ("error", exc.field, exc.code, str(exc))
    # A generated correlation id is random: compare that there is one, not its value.
    given = completion.correlation_id == "corr-1"
    return dataclasses.replace(completion, correlation_id="corr-1" if given else "generated")


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_the_quick_path_answers_as_the_full_checks(case: dict[str, Any]) -> None:
    """Twice each, so the second goes through what the first taught the checker."""
    clock = FakeClock()
    checker = ReportChecker(PIPELINE, clock)
    full = _outcome(lambda report: build_completion(PIPELINE, clock, report), case)
    assert _outcome(checker.check, case) == full
    assert _outcome(checker.check, case) == full


def test_only_valid_run_keys_are_remembered_and_no_more_than_the_limit() -> None:
    """A bad run key is refused every time; the memory of good ones stays bounded."""
    checker = ReportChecker(PIPELINE, FakeClock(), known_run_keys=3)
    for _ in range(2):
        with pytest.raises(ValidationError, match="does not match the pattern"):
            checker.check(CompletionReport("extract", "2025-01-01", "api"))
    for day in range(1, 8):
        checker.check(CompletionReport("extract", f"2026-01-0{day}", "api"))
        assert len(checker._run_keys) <= 3
    assert checker.check(CompletionReport("extract", "2026-01-01", "api")).run_key == "2026-01-01"


@pytest.mark.parametrize(
    "body",
    [
        {"phase": "extract", "run_key": "r", "processor": "api"},
        {"phase": "extract", "run_key": "r", "processor": "api", "correlation_id": ""},
        {"phase": "extract", "run_key": "r", "processor": "api", "status": "failed"},
        {"phase": "extract", "run_key": "r"},
        {"phase": "extract", "run_key": "r", "processor": "api", "extra": 1},
        {"phase": "extract", "run_key": "r", "processor": "api", 3: "x"},
        ["phase"],
        "report",
    ],
)
def test_a_report_in_the_usual_shape_is_parsed_as_any_other(body: Any) -> None:
    """The quick shape check gives the same report (default correlation id included),
    and anything else the same error, as the field-by-field checks."""

    def outcome(value: Any) -> Any:
        try:
            return parse_report(value, default_correlation_id="msg-1")
        except ValidationError as exc:
            return ("error", exc.field, exc.code, str(exc))

    as_mapping = MappingProxyType(body) if isinstance(body, dict) else body
    assert outcome(body) == outcome(as_mapping)
