"""The Slack sink: Block Kit messages through ``slack_sdk``'s incoming-webhook client.

Retries ride on slack_sdk's retry handlers (connection errors, 5xx, 429 honouring
Retry-After); they are subclassed only so their waits go through an injected sleep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.webhook import WebhookClient

from phasegate.alerts.base import Alert, AlertDeliveryError
from phasegate.events import Severity
from phasegate.redact import SCRUBBER, Scrubber, ScrubbingFilter, redact_url

log = logging.getLogger(__name__)

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
BLOCK_LIMIT = 50
MESSAGE_LIMIT = 500
STACK_LIMIT = 2000
MAX_RETRY_AFTER = 60.0

EMOJI = {
    Severity.CRITICAL: ":rotating_light:",
    Severity.WARNING: ":warning:",
    Severity.INFO: ":information_source:",
    Severity.RESOLVED: ":white_check_mark:",
}
COLOUR = {
    Severity.CRITICAL: "#D32F2F",
    Severity.WARNING: "#F2A900",
    Severity.INFO: "#439FE0",
    Severity.RESOLVED: "#2EB67D",
}


def cut(text: str, limit: int, *, keep: str = "head") -> str:
    """``text`` shortened to ``limit`` characters with an ellipsis (keeping head or tail)."""
    if len(text) <= limit:
        return text
    if keep == "tail":
        return "…" + text[-(limit - 1) :]
    return text[: limit - 1] + "…"


def escape(text: str) -> str:
    """Escape what Slack's mrkdwn treats specially (and code-fence breakers)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("```", "ˋˋˋ")


def _code(label: str, body: str) -> dict[str, Any]:
    text = f"*{label}:*\n```{body}```"
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SECTION_LIMIT)}}


def build_message(alert: Alert, scrubber: Scrubber = SCRUBBER) -> dict[str, Any]:
    """The webhook payload for ``alert``: Block Kit in a coloured attachment, plus ``text``."""
    clean = scrubber.scrub
    emoji = EMOJI[alert.severity]
    suffix = {
        Severity.CRITICAL: "Error",
        Severity.WARNING: "Error",
        Severity.INFO: "",
        Severity.RESOLVED: "Resolved",
    }[alert.severity]
    header = cut(" ".join(x for x in (emoji, clean(alert.component), suffix) if x), HEADER_LIMIT)
    fields = [
        ("Component", alert.component),
        ("Run key", alert.run_key or "N/A"),
        ("Error type", alert.error_type or "N/A"),
        ("Correlation ID", alert.correlation_id or "N/A"),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": cut(f"*{name}:*\n{escape(clean(value))}", 2000)}
                for name, value in fields
            ],
        },
        _code("Error message", escape(cut(clean(alert.message), MESSAGE_LIMIT))),
    ]
    if alert.stack_trace:
        blocks.append(
            _code("Stack trace", escape(cut(clean(alert.stack_trace), STACK_LIMIT, keep="tail")))
        )
    context = []
    if alert.count > 1:
        context.append(f"Occurred {alert.count} times")
    if alert.hint:
        context.append(escape(alert.hint))
    context.append(alert.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"))
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " | ".join(context)}]}
    )
    fallback = cut(f"{header}: {clean(alert.message)}", SECTION_LIMIT)
    return {
        "text": fallback,
        "attachments": [{"color": COLOUR[alert.severity], "blocks": blocks[:BLOCK_LIMIT]}],
    }


class _SleepInjected(RetryHandler):
    """Mixin: wait through the injected ``sleep`` instead of ``time.sleep``."""

    sleep: Callable[[float], None]

    def wait_for(self, state: RetryState, response: HttpResponse | None) -> float:
        """Seconds to wait before the next attempt."""
        return float(self.interval_calculator.calculate_sleep_duration(state.current_attempt))

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        self.sleep(self.wait_for(state, response))
        state.increment_current_attempt()


class _ConnectionRetry(_SleepInjected, ConnectionErrorRetryHandler):
    pass


class _ServerErrorRetry(_SleepInjected, ServerErrorRetryHandler):
    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and 500 <= response.status_code < 600


class _RateLimitRetry(_SleepInjected, RateLimitErrorRetryHandler):
    def wait_for(self, state: RetryState, response: HttpResponse | None) -> float:
        """Slack's ``Retry-After`` (capped), else one second."""
        for name, values in (response.headers if response is not None else {}).items():
            if name.lower() == "retry-after" and values:
                try:
                    return min(max(float(values[0]), 0.0), MAX_RETRY_AFTER)
                except ValueError:
                    break
        return 1.0


def retry_handlers(
    sleep: Callable[[float], None], retries: int = 3, backoff: float = 0.5
) -> list[RetryHandler]:
    """slack_sdk retry handlers for connection errors, 5xx and 429, sleeping via ``sleep``."""
    calculator = _Backoff(backoff)
    handlers: list[RetryHandler] = [
        _ConnectionRetry(max_retry_count=retries, interval_calculator=calculator),
        _ServerErrorRetry(max_retry_count=retries, interval_calculator=calculator),
        _RateLimitRetry(max_retry_count=retries),
    ]
    for handler in handlers:
        handler.sleep = sleep  # type: ignore[attr-defined]
    return handlers


class _Backoff(RetryIntervalCalculator):
    def __init__(self, base: float) -> None:
        self.base = base

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        return float(self.base * 2**current_attempt)


def _sdk_logger(scrubber: Scrubber) -> logging.Logger:
    """slack_sdk logs the webhook URL at debug level: give it a logger that masks it."""
    logger = logging.getLogger("phasegate.alerts.slack_sdk")
    if not any(isinstance(f, ScrubbingFilter) for f in logger.filters):
        logger.addFilter(ScrubbingFilter(scrubber))
    return logger


class SlackSink:
    """Posts alerts to a Slack incoming webhook."""

    name = "slack"

    def __init__(
        self,
        webhook_url: str,
        *,
        min_severity: Severity = Severity.WARNING,
        sleep: Callable[[float], None] | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        scrubber: Scrubber = SCRUBBER,
    ) -> None:
        import time  # noqa: PLC0415 - the default sleep only

        scrubber.add(webhook_url)
        self.min_severity = min_severity
        self._scrubber = scrubber
        self._url_label = redact_url(webhook_url, hide_path=True)
        self._client = WebhookClient(
            webhook_url,
            timeout=int(max(1, timeout)),
            retry_handlers=retry_handlers(sleep or time.sleep, retries),
            logger=_sdk_logger(scrubber),
        )

    @property
    def key(self) -> str:
        """A printable key of this webhook (no secret), for per-webhook rate limits."""
        return f"slack:{self._url_label}"

    def post(self, payload: dict[str, Any]) -> None:
        """Post a prepared payload; raise AlertDeliveryError unless Slack said ok."""
        try:
            response = self._client.send_dict(payload)
        except OSError as exc:
            raise AlertDeliveryError(
                self._scrubber.scrub(f"slack webhook unreachable: {type(exc).__name__}: {exc}")
            ) from None
        if response.status_code != 200:
            raise AlertDeliveryError(
                self._scrubber.scrub(
                    f"slack webhook answered HTTP {response.status_code}: {response.body[:200]}"
                )
            )

    def send(self, alert: Alert) -> None:
        """Post ``alert`` as a Block Kit message."""
        self.post(build_message(alert, self._scrubber))

    def close(self) -> None:
        """Nothing to release (urllib opens a connection per request)."""

    def __repr__(self) -> str:
        return f"SlackSink({self._url_label})"


def run_summary_payload(
    title: str, lines: list[str], ok: bool, when: str | None = None
) -> dict[str, Any]:
    """A Block Kit message for a run summary (``phasegate summary --send``)."""
    emoji = ":white_check_mark:" if ok else ":warning:"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": cut(f"{emoji} {title}", HEADER_LIMIT),
                "emoji": True,
            },
        }
    ]
    for line in lines[: BLOCK_LIMIT - 2]:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": cut(escape(line), SECTION_LIMIT)},
            }
        )
    if when:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": when}]})
    return {"text": cut(f"{title}: " + "; ".join(lines), SECTION_LIMIT), "blocks": blocks}


__all__ = ["SlackSink", "build_message", "cut", "retry_handlers", "run_summary_payload"]
