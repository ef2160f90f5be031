"""Record-and-deliver, manual triggers and maintenance as library calls (the shells' logic)."""

from __future__ import annotations

from typing import Any

import pytest

from phasegate.errors import ValidationError
from phasegate.recording import parse_report
from support import Harness

RUN = "2026-01-28"


def test_record_delivers_the_trigger_it_claimed(harness: Harness) -> None:
    """The completion that completes a phase is recorded, claimed and delivered in one call."""
    first = harness.runtime.record("extract", RUN, "api")
    assert (first.result.claimed, first.delivery) == (False, None)
    last = harness.runtime.record("extract", RUN, "files")
    assert last.result.claimed
    assert last.delivery is not None
    assert last.delivery.delivered
    assert [t.trigger_id for t in harness.transport.delivered] == [last.result.trigger_id]
    assert last.to_dict()["delivery"] == "delivered"


def test_record_without_delivery_leaves_the_trigger_to_the_dispatcher(harness: Harness) -> None:
    """deliver=False claims but does not deliver; the dispatcher's next pass does."""
    harness.runtime.record("extract", RUN, "api", deliver=False)
    recorded = harness.runtime.record("extract", RUN, "files", deliver=False)
    assert recorded.result.claimed
    assert recorded.delivery is None
    assert harness.transport.delivered == []
    assert harness.runtime.dispatcher.run_once().delivered == (recorded.result.trigger_id,)


def test_a_failed_delivery_is_pending_and_says_what_to_do(harness: Harness) -> None:
    """The transport failing leaves the trigger pending, with the reason and the next step."""
    harness.transport.failing = True
    harness.runtime.record("extract", RUN, "api")
    recorded = harness.runtime.record("extract", RUN, "files")
    assert recorded.delivery is not None
    assert not recorded.delivery.delivered
    assert "receiver down" in recorded.delivery.describe()
    assert "phasegate dispatch" in recorded.delivery.describe()


def test_trigger_claims_once_and_delivers(harness: Harness) -> None:
    """A manual trigger is claimed and delivered; the second one finds it already triggered."""
    first = harness.runtime.trigger("extract", RUN)
    assert first.to_dict() | {"trigger_id": None} == {
        "trigger_id": None,
        "claimed": True,
        "deferred": False,
        "reason": "manual",
        "delivery": "delivered",
    }
    again = harness.runtime.trigger("extract", RUN)
    assert (again.result.claimed, again.delivery) == (False, None)
    assert len(harness.transport.delivered) == 1


def test_maintain_reports_timeouts_and_delivers_what_it_claimed(harness: Harness) -> None:
    """A phase past its timeout with on_timeout=trigger is reported, claimed and delivered."""
    harness.runtime.record("extract", RUN, "api")
    harness.runtime.record("extract", RUN, "files")
    harness.runtime.record("transform", RUN, "clean")
    harness.clock.advance(31 * 60)
    maintenance = harness.runtime.maintain()
    data = maintenance.to_dict()
    [finding] = data["timed_out"]
    assert (finding["phase"], finding["missing"], finding["first_report"]) == (
        "transform",
        ["join"],
        True,
    )
    assert finding["trigger_id"] in {t.trigger_id for t in harness.transport.delivered}
    assert "timed out: transform for 2026-01-28 (reported); missing: join" in (
        maintenance.to_text()
    )


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ([1], "malformed_body", None),
        ({"phase": "extract", "run_key": RUN}, "missing_field", "processor"),
        ({"phase": "extract", "run_key": RUN, "processor": "api", "x": 1}, "unknown_field", "x"),
    ],
)
def test_a_report_body_is_checked_for_shape_in_the_library(
    body: Any, code: str, field: str | None
) -> None:
    """Not an object, a missing or an unknown field: a ValidationError with its code."""
    with pytest.raises(ValidationError) as info:
        parse_report(body)
    assert (info.value.code, info.value.field or None) == (code, field)


def test_record_report_uses_the_default_correlation_id(harness: Harness) -> None:
    """A report without a correlation id takes the one its envelope carried."""
    body = {"phase": "extract", "run_key": RUN, "processor": "api"}
    recorded = harness.runtime.record_report(body, default_correlation_id="m-7")
    assert recorded.result.completion.correlation_id == "m-7"


def test_record_reports_answers_each_report_and_delivers_what_the_batch_claimed(
    harness: Harness,
) -> None:
    """A batch with a report no store could encode (a lone surrogate) among good ones:
    it is rejected with its index and field, the others are recorded, and the trigger
    they claimed is delivered before the call returns."""
    batch = harness.runtime.record_reports(
        [
            {"phase": "extract", "run_key": RUN, "processor": "api"},
            {"phase": "extract", "run_key": RUN, "processor": "api", "correlation_id": "\ud800"},
            {"phase": "extract", "run_key": RUN, "processor": "files"},
        ]
    )
    assert [item.ok for item in batch.items] == [True, False, True]
    error = batch.items[1].error
    assert error is not None
    assert (batch.items[1].index, error.field) == (1, "correlation_id")
    [trigger_id] = batch.claimed
    assert batch.deliveries[trigger_id].delivered
    assert [t.trigger_id for t in harness.transport.delivered] == [trigger_id]
    again = harness.runtime.record_reports(
        [{"phase": "extract", "run_key": RUN, "processor": "files"}], deliver=False
    )
    assert (again.claimed, again.deliveries) == (set(), {})


@pytest.mark.parametrize(
    ("reports", "got"),
    [({"phase": "extract"}, "object"), ("ab", "string"), (None, "null"), (b"[]", "bytes")],
)
def test_a_batch_that_is_not_a_list_of_reports_is_refused_whole(
    harness: Harness, reports: Any, got: str
) -> None:
    """One report passed where a list belongs is not taken apart key by key (or
    character by character): a ValidationError naming ``completions``, and no alert."""
    with pytest.raises(ValidationError, match=f"expected a list of report objects, got {got}"):
        harness.orchestrator.record_completions(reports)
    assert harness.events == []
