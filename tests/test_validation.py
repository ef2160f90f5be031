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
    {**GOOD, "correlation_id": "a\ud800b"},
    {**GOOD, "correlation_id": "line\nforged"},
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


@pytest.mark.parametrize("value", [0, False, [], {}])
def test_a_correlation_id_of_a_wrong_falsy_type_is_refused_not_replaced(value: Any) -> None:
    """Only an absent, null or empty correlation id gets a fresh one: ``0`` or ``false``
    is a wrong type, named as such."""
    checker = ReportChecker(PIPELINE, FakeClock())
    with pytest.raises(ValidationError) as info:
        checker.check(parse_report({**GOOD, "correlation_id": value}))
    assert (info.value.field, info.value.code) == ("correlation_id", "wrong_type")
    for empty in (None, ""):
        completion = checker.check(parse_report({**GOOD, "correlation_id": empty}))
        assert len(completion.correlation_id) == 32


def test_a_correlation_id_no_store_could_encode_is_refused_by_name() -> None:
    """A lone surrogate (valid in a JSON string, not in UTF-8) is refused with the field,
    not met later as both stores failing."""
    checker = ReportChecker(PIPELINE, FakeClock())
    with pytest.raises(ValidationError, match="unpaired surrogates") as info:
        checker.check(parse_report({**GOOD, "correlation_id": "\ud800"}))
    assert info.value.field == "correlation_id"


@pytest.mark.parametrize(
    "run_key", ["\u0662\u0660\u0662\u0666-01-28", "\uff12\uff10\uff12\uff16-01-28"]
)
def test_digits_of_other_scripts_do_not_pass_the_default_date_pattern(run_key: str) -> None:
    """The default pattern spells digits ``[0-9]`` (Python's ``\\d`` takes any script's):
    Arabic-Indic or full-width digits are not the date they look like, and would be a
    second run of it."""
    default = loads_pipeline(PIPELINE_TEXT)  # no run_key_pattern: the default
    with pytest.raises(ValidationError) as info:
        ReportChecker(default, FakeClock()).check(parse_report({**GOOD, "run_key": run_key}))
    assert info.value.code == "bad_run_key"
    assert ReportChecker(default, FakeClock()).check(parse_report(GOOD)).run_key == "2026-01-28"


def test_a_wrong_type_is_named_in_json_words() -> None:
    checker = ReportChecker(PIPELINE, FakeClock())
    with pytest.raises(ValidationError, match="expected a JSON object, got string"):
        checker.check(parse_report({**GOOD, "metadata": "rows=3"}))


@pytest.mark.parametrize("data", [b"[" * 100_000 + b"]" * 100_000, b"\xff{}", b"[]"])
def test_a_pubsub_message_that_is_no_report_object_is_malformed(data: bytes) -> None:
    """Nested too deeply for the parser, not UTF-8, not an object: a MalformedMessage
    (dead-lettered or answered 400), never an unexpected error."""
    from phasegate.pubsub import MalformedMessage, decode_data

    with pytest.raises(MalformedMessage) as info:
        decode_data(data)
    assert info.value.field == "message.data"


@pytest.mark.parametrize("value", ["a\u00a0b", "\U0001f469\u200d\U0001f4bb", "\u200fabc", "é-1"])
def test_a_correlation_id_of_unusual_text_is_kept(value: str) -> None:
    """A no-break space, an emoji joined by a zero-width joiner, a direction mark: text,
    accepted as it came (only control characters and lone surrogates are refused)."""
    checker = ReportChecker(PIPELINE, FakeClock())
    assert checker.check(parse_report({**GOOD, "correlation_id": value})).correlation_id == value
