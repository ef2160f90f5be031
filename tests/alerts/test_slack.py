"""The Slack sink: exact Block Kit structure, truncation, and retries per Slack's answers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from phasegate.alerts.base import Alert, AlertDeliveryError
from phasegate.alerts.slack import SlackSink, build_message
from phasegate.events import Severity
from support import RecordingServer

WHEN = datetime(2026, 1, 28, 19, 30, tzinfo=UTC)


def alert(**overrides: object) -> Alert:
    values: dict[str, object] = {
        "severity": Severity.CRITICAL,
        "component": "phase3_to_phase4",
        "title": "both stores failed",
        "message": "record completion failed: both stores failed",
        "fingerprint": "stores:both-failed",
        "created_at": WHEN,
        "run_key": "2026-01-28",
        "error_type": "BothStoresFailed",
        "stack_trace": (
            'Traceback (most recent call last):\n  File "x.py", line 1\nBothStoresFailed'
        ),
        "correlation_id": None,
        "hint": "Check both stores.",
    }
    values.update(overrides)
    return Alert(**values)  # type: ignore[arg-type]


def test_the_message_has_the_documented_block_structure() -> None:
    """Header, four fields, message and stack code blocks, context; colour and text fallback."""
    payload = build_message(alert())
    assert payload["text"].startswith(":rotating_light: phase3_to_phase4 Error: record completion")
    [attachment] = payload["attachments"]
    assert attachment["color"] == "#D32F2F"
    header, fields, message, stack, context = attachment["blocks"]
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": ":rotating_light: phase3_to_phase4 Error",
            "emoji": True,
        },
    }
    assert [f["text"] for f in fields["fields"]] == [
        "*Component:*\nphase3_to_phase4",
        "*Run key:*\n2026-01-28",
        "*Error type:*\nBothStoresFailed",
        "*Correlation ID:*\nN/A",
    ]
    assert (
        message["text"]["text"]
        == "*Error message:*\n```record completion failed: both stores failed```"
    )
    assert stack["text"]["text"].startswith("*Stack trace:*\n```Traceback")
    assert context["type"] == "context"
    assert context["elements"][0]["text"] == "Check both stores. | 2026-01-28 19:30:00 UTC"


@pytest.mark.parametrize(
    ("severity", "emoji", "colour", "word"),
    [
        (Severity.WARNING, ":warning:", "#F2A900", "Error"),
        (Severity.RESOLVED, ":white_check_mark:", "#2EB67D", "Resolved"),
    ],
)
def test_each_severity_has_its_emoji_and_colour(
    severity: Severity, emoji: str, colour: str, word: str
) -> None:
    """Warning is amber, resolved is green, each with its own emoji."""
    payload = build_message(alert(severity=severity, stack_trace=None))
    header = payload["attachments"][0]["blocks"][0]["text"]["text"]
    assert header == f"{emoji} phase3_to_phase4 {word}"
    assert payload["attachments"][0]["color"] == colour
    assert len(payload["attachments"][0]["blocks"]) == 4  # no stack block


def test_everything_is_cut_to_slacks_limits() -> None:
    """Header ≤ 150, message ≤ 500, stack ≤ 2000 (its tail), every section ≤ 3000."""
    payload = build_message(
        alert(component="c" * 400, message="m" * 5000, stack_trace="s" * 9000 + "END", count=3)
    )
    blocks = payload["attachments"][0]["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150
    code = blocks[2]["text"]["text"].split("```")[1]
    assert len(code) == 500
    assert code.endswith("…")
    stack = blocks[3]["text"]["text"].split("```")[1]
    assert len(stack) == 2000
    assert stack.endswith("END")
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in blocks)
    assert len(blocks) <= 50
    assert blocks[-1]["elements"][0]["text"].startswith("Occurred 3 times")
    assert len(payload["text"]) <= 3000


def test_markup_in_messages_is_escaped() -> None:
    """Angle brackets, ampersands and code fences cannot break the message."""
    payload = build_message(alert(message="<!channel> & ```oops```"))
    text = payload["attachments"][0]["blocks"][2]["text"]["text"]
    assert "&lt;!channel&gt; &amp;" in text
    assert text.count("```") == 2


def post(server: RecordingServer, sleeps: list[float]) -> SlackSink:
    return SlackSink(server.url + "/services/T000/B000/XYZSECRET", sleep=sleeps.append)


@pytest.mark.parametrize(
    ("first", "expected_sleep"),
    [
        ((500, {}, b"rollup_error"), 0.5),
        ((503, {}, b"service unavailable"), 0.5),
        ((429, {"Retry-After": "7"}, b"rate_limited"), 7.0),
        ("close", 0.5),
    ],
    ids=["500", "503", "429-retry-after", "connection-closed"],
)
def test_transient_answers_are_retried(first: object, expected_sleep: float) -> None:
    """5xx, 429 (waiting its Retry-After) and a dropped connection are retried, then succeed."""
    sleeps: list[float] = []
    with RecordingServer() as server:
        server.responses = [first]
        post(server, sleeps).send(alert())
    assert len(server.requests) == 2
    assert sleeps == [expected_sleep]
    assert server.requests[1].json()["attachments"][0]["color"] == "#D32F2F"


def test_a_permanent_refusal_is_not_retried_and_names_no_secret() -> None:
    """400 invalid_payload fails at once; the error does not contain the webhook path."""
    sleeps: list[float] = []
    with RecordingServer((400, {}, b"invalid_payload")) as server:
        sink = post(server, sleeps)
        with pytest.raises(AlertDeliveryError, match="HTTP 400: invalid_payload") as info:
            sink.send(alert())
    assert len(server.requests) == 1
    assert sleeps == []
    assert "XYZSECRET" not in str(info.value)
    assert "XYZSECRET" not in repr(sink)


def test_retries_give_up_after_the_limit() -> None:
    """A webhook that keeps failing raises after its retries, each wait longer."""
    sleeps: list[float] = []
    with (
        RecordingServer((500, {}, b"rollup_error")) as server,
        pytest.raises(AlertDeliveryError, match="HTTP 500"),
    ):
        post(server, sleeps).send(alert())
    assert len(server.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]
