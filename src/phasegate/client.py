"""A small HTTP client for processors: report completions to ``phasegate serve``.

::

    from phasegate.client import Client

    with Client("https://phasegate.example.com", token=os.environ["PHASEGATE_TOKEN"]) as client:
        receipt = client.complete("phase2", "2026-01-28", "bdl_boxscores", metadata={"rows": 1234})

Connection errors and 5xx answers are retried with jittered exponential backoff
(honouring ``Retry-After``); 4xx answers never are: they name what was wrong and
raise :class:`RequestRejected` at once. Every retry of a report carries the same
correlation id, generated here once when the caller gives none, so the server's
logs tie the attempts together; completions are idempotent, so a retry of a report
the server did record is harmless.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpx
import tenacity
from tenacity.wait import wait_base

from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.errors import PhasegateError
from phasegate.model import frozen_metadata
from phasegate.resilience.retry import Jitter, RetryPolicy

log = logging.getLogger(__name__)

DEFAULT_CLIENT_POLICY = RetryPolicy(attempts=5, base=0.5, max_delay=10.0, jitter=Jitter.FULL)
BATCH_PATH = "/v1/completions:batch"
SINGLE_PATH = "/v1/completions"
_MAX_BODY_IN_ERRORS = 500


class ClientError(PhasegateError):
    """A report could not be handed to phasegate; the subclass says why."""


class ServerUnreachable(ClientError):
    """Every attempt failed to connect or to get an answer (``__cause__`` is the last)."""


class HttpStatusError(ClientError):
    """phasegate answered with an error: ``status``, and its ``code``, ``field``, ``message``.

    ``body`` is the server's error body as received (cut to 500 characters).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        where = f" ({field})" if field else ""
        super().__init__(f"HTTP {status} {code}{where}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body = body
        self.retry_after = retry_after


class RequestRejected(HttpStatusError):
    """A 4xx answer: the report itself is wrong (or the token is); retrying will not help."""


class ServerError(HttpStatusError):
    """A 5xx answer on every attempt (503: neither store could record it; report later)."""


@dataclass(frozen=True, slots=True)
class Report:
    """One completion to report, as ``POST /v1/completions`` takes it."""

    phase: str
    run_key: str
    processor: str
    status: str = "success"
    correlation_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: frozen_metadata(None))

    def with_correlation_id(self) -> Report:
        """This report with a correlation id: its own, or a new one (kept across retries)."""
        if self.correlation_id:
            return self
        return Report(
            self.phase,
            self.run_key,
            self.processor,
            self.status,
            uuid.uuid4().hex,
            self.metadata,
        )

    def to_body(self) -> dict[str, Any]:
        """The JSON body of this report."""
        body: dict[str, Any] = {
            "phase": self.phase,
            "run_key": self.run_key,
            "processor": self.processor,
            "status": self.status,
            "correlation_id": self.correlation_id,
        }
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        return body


@dataclass(frozen=True, slots=True)
class Receipt:
    """What phasegate answered for one recorded report."""

    correlation_id: str | None
    phase_complete: bool
    trigger_id: str | None
    claimed: bool
    deferred: bool
    primary_ok: bool
    backup_ok: bool

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Receipt:
        """Read the answer of ``POST /v1/completions`` (or one item of a batch)."""
        return cls(
            correlation_id=body.get("correlation_id"),
            phase_complete=bool(body.get("phase_complete")),
            trigger_id=body.get("trigger_id"),
            claimed=bool(body.get("claimed")),
            deferred=bool(body.get("deferred")),
            primary_ok=bool(body.get("primary_ok", True)),
            backup_ok=bool(body.get("backup_ok", True)),
        )


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one report of :meth:`Client.complete_many`: a receipt or a rejection."""

    index: int
    report: Report
    receipt: Receipt | None = None
    error: RequestRejected | None = None

    @property
    def ok(self) -> bool:
        """The report was recorded."""
        return self.receipt is not None


class _HonourRetryAfter(wait_base):
    """The policy's jittered wait, but never shorter than the server's ``Retry-After``."""

    def __init__(self, jittered: wait_base, cap: float) -> None:
        self.jittered, self.cap = jittered, cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self.jittered(retry_state)
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, HttpStatusError) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.cap))
        return wait


class Client:
    """Reports completions to a phasegate service over HTTP, retrying what is worth it.

    ``url`` is the service's base URL; ``token`` its bearer token, if it has one.
    ``sleep``, ``rng`` and ``clock`` are injected for tests; ``transport`` is passed to
    :class:`httpx.Client`. ``max_retry_after`` caps how long one ``Retry-After`` may
    hold a call (a Cloud Function has a deadline).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        policy: RetryPolicy = DEFAULT_CLIENT_POLICY,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        max_retry_after: float = 60.0,
        batch_size: int = 100,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        headers = {"User-Agent": "phasegate-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.policy = policy
        self.batch_size = batch_size
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock or SYSTEM_CLOCK
        self._max_retry_after = max_retry_after
        self._has_batch: bool | None = None

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def complete(
        self,
        phase: str,
        run_key: str,
        processor: str,
        status: str = "success",
        correlation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Receipt:
        """Report that ``processor`` finished its part of ``run_key`` in ``phase``.

        Raises :class:`RequestRejected` (4xx, at once), :class:`ServerError` (5xx on
        every attempt) or :class:`ServerUnreachable`.
        """
        report = Report(
            phase, run_key, processor, status, correlation_id, frozen_metadata(metadata)
        ).with_correlation_id()
        return Receipt.from_body(self._post(SINGLE_PATH, report.to_body()).json())

    def complete_many(self, reports: Iterable[Report | Mapping[str, Any]]) -> list[ItemResult]:
        """Report many completions: in batches when the server has ``/v1/completions:batch``,
        else one by one. One result per report, in order; a rejected report does not stop
        the others. A 5xx or connection failure that outlasts the retries raises, and the
        reports of earlier batches stay recorded (re-sending them is harmless).
        """
        prepared = [_as_report(item).with_correlation_id() for item in reports]
        results: list[ItemResult] = []
        for offset in range(0, len(prepared), self.batch_size):
            chunk = prepared[offset : offset + self.batch_size]
            if self._has_batch is not False:
                batch = self._post_batch(chunk, offset)
                if batch is not None:
                    results.extend(batch)
                    continue
            results.extend(self._one_by_one(chunk, offset))
        return results

    # -- the wire ------------------------------------------------------------------------

    def _post_batch(self, chunk: Sequence[Report], offset: int) -> list[ItemResult] | None:
        try:
            response = self._post(BATCH_PATH, {"completions": [r.to_body() for r in chunk]})
        except RequestRejected as exc:
            if exc.status in {404, 405} and self._has_batch is None:
                log.info("%s has no batch endpoint; reporting one by one", self.url)
                self._has_batch = False
                return None
            raise
        self._has_batch = True
        body = response.json()
        items = body.get("results", body.get("items")) if isinstance(body, Mapping) else body
        if not isinstance(items, list) or len(items) != len(chunk):
            raise ClientError(f"unexpected answer from {BATCH_PATH}: {_clip(response.text)}")
        return [
            _item_result(offset + position, report, item)
            for position, (report, item) in enumerate(zip(chunk, items, strict=True))
        ]

    def _one_by_one(self, chunk: Sequence[Report], offset: int) -> Iterator[ItemResult]:
        for position, report in enumerate(chunk):
            try:
                response = self._post(SINGLE_PATH, report.to_body())
            except RequestRejected as exc:
                yield ItemResult(offset + position, report, error=exc)
                continue
            yield ItemResult(offset + position, report, receipt=Receipt.from_body(response.json()))

    def _post(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        def attempt() -> httpx.Response:
            try:
                response = self._http.post(path, json=body)
            except httpx.TransportError as exc:
                raise ServerUnreachable(
                    f"cannot reach {self.url}{path}: {type(exc).__name__}: {exc}"
                ) from exc
            if response.status_code >= 400:
                raise self._status_error(response)
            return response

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.policy.attempts),
            wait=_HonourRetryAfter(self.policy.wait(self._rng), self._max_retry_after),
            retry=tenacity.retry_if_exception_type((ServerError, ServerUnreachable)),
            sleep=self._sleep,
            reraise=True,
            before_sleep=_log_retry,
        )
        return retrying(attempt)

    def _status_error(self, response: httpx.Response) -> HttpStatusError:
        code, message, field_name = f"http_{response.status_code}", response.reason_phrase, None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if isinstance(payload, Mapping) and isinstance(payload.get("error"), Mapping):
            error = payload["error"]
            code = str(error.get("code") or code)
            message = str(error.get("message") or message)
            field_name = error.get("field")
        elif isinstance(payload, Mapping) and "detail" in payload:
            message = str(payload["detail"])
        kind = ServerError if response.status_code >= 500 else RequestRejected
        return kind(
            response.status_code,
            code,
            message,
            field_name,
            _clip(response.text),
            _retry_after(response.headers.get("retry-after"), self._clock.now()),
        )


def _as_report(item: Report | Mapping[str, Any]) -> Report:
    if isinstance(item, Report):
        return item
    unknown = set(item) - {"phase", "run_key", "processor", "status", "correlation_id", "metadata"}
    if unknown:
        raise TypeError(f"unknown report field(s): {', '.join(sorted(unknown))}")
    return Report(
        item["phase"],
        item["run_key"],
        item["processor"],
        item.get("status", "success"),
        item.get("correlation_id"),
        frozen_metadata(item.get("metadata")),
    )


def _item_result(index: int, report: Report, item: Mapping[str, Any]) -> ItemResult:
    if item.get("ok", "error" not in item):
        return ItemResult(index, report, receipt=Receipt.from_body(item))
    error = item.get("error") or {}
    return ItemResult(
        index,
        report,
        error=RequestRejected(
            int(item.get("status", 422)),
            str(error.get("code", "invalid")),
            str(error.get("message", "rejected")),
            error.get("field"),
            _clip(str(item)),
        ),
    )


def _retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date measured from ``now``."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_BODY_IN_ERRORS else text[:_MAX_BODY_IN_ERRORS] + "…"


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    outcome = retry_state.outcome
    log.warning(
        "phasegate report attempt %d failed (%s); retrying in %.2fs",
        retry_state.attempt_number,
        outcome.exception() if outcome is not None else None,
        retry_state.upcoming_sleep,
    )
