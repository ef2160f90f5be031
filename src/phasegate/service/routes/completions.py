"""``POST /v1/completions`` and ``POST /v1/completions:batch``: thin shells over
``Runtime.arecord_report`` / ``Runtime.arecord_reports``, awaited on the event loop
(the stores' writers do the blocking work; no thread-pool hop per request).

The service answers both paths through :mod:`phasegate.service.fast`, ahead of FastAPI;
the routes declared here document them (OpenAPI) and answer an app built without it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from phasegate.errors import BothStoresFailed, ValidationError
from phasegate.metrics import Metrics
from phasegate.service.body import (
    ERROR_RESPONSES,
    MAX_BATCH_BYTES,
    MAX_BATCH_ITEMS,
    body_doc,
    json_response,
    read_json,
)
from phasegate.service.context import ServiceContext
from phasegate.service.errors import ApiError


class CompletionIn(BaseModel):
    """A completion report (documentation of the body; validation is the library's)."""

    phase: str = Field(description="A phase of the pipeline")
    run_key: str = Field(description="The run, e.g. 2026-01-28")
    processor: str = Field(description="A processor expected in that phase")
    status: str = Field("success", description="success or failed")
    correlation_id: str | None = Field(None, max_length=256)
    metadata: dict[str, Any] | None = Field(None, description="A JSON object, at most 16 KiB")


@contextmanager
def counted(metrics: Metrics, body: object) -> Iterator[None]:
    """Count a report that failed validation or found both stores down, then let it raise."""
    report = body if isinstance(body, dict) else {}
    status = str(report.get("status", ""))
    try:
        yield
    except ValidationError:
        metrics.completions.labels("", status, "rejected").inc()
        raise
    except BothStoresFailed:
        metrics.completions.labels(str(report.get("phase", "")), status, "failed").inc()
        raise


class CompletionBatchIn(BaseModel):
    """Up to 1,000 completion reports, each answered on its own."""

    completions: list[CompletionIn] = Field(max_length=MAX_BATCH_ITEMS)


async def record_data(
    context: ServiceContext, body: object, default_correlation_id: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Record a decoded report (the dispatcher loop delivers what it claims): 202 and the
    result."""
    with counted(context.metrics, body):
        result = await context.runtime.arecord_report(
            body, default_correlation_id=default_correlation_id
        )
    completion = result.completion
    context.metrics.completions.labels(completion.phase, completion.status.value, "recorded").inc()
    return 202, result.to_dict()


async def record(
    context: ServiceContext, body: object, default_correlation_id: str | None = None
) -> Response:
    """:func:`record_data` as a response."""
    status, data = await record_data(context, body, default_correlation_id)
    return json_response(data, status_code=status)


def batch_items(body: object) -> list[Any]:
    """The ``completions`` array of a batch body; 400/413 when it is not one, or too long."""
    if not isinstance(body, dict) or set(body) != {"completions"}:
        raise ApiError(
            400,
            "malformed_body",
            'a batch is a JSON object with one key, "completions": an array of reports',
            field="completions",
        )
    items = body["completions"]
    if not isinstance(items, list):
        raise ApiError(400, "malformed_body", "completions must be an array", field="completions")
    if len(items) > MAX_BATCH_ITEMS:
        raise ApiError(
            413,
            "too_large",
            f"{len(items)} reports; at most {MAX_BATCH_ITEMS} in one batch",
            field="completions",
        )
    return items


async def record_batch_data(context: ServiceContext, body: object) -> tuple[int, dict[str, Any]]:
    """Record a batch: 200 with a result per item (bad items rejected, good ones kept);
    503 when the stores took none of it."""
    items = batch_items(body)
    try:
        answers = await context.runtime.arecord_reports(items)
    except BothStoresFailed:
        context.metrics.completions.labels("", "", "failed").inc(len(items))
        raise
    # Counted once per phase and status, not once per item (a labels() lookup each).
    counts: Counter[tuple[str, str, str]] = Counter()
    for item in answers:
        if item.result is not None:
            completion = item.result.completion
            counts[completion.phase, completion.status.value, "recorded"] += 1
        else:
            counts["", "", "rejected"] += 1
    for labels, count in counts.items():
        context.metrics.completions.labels(*labels).inc(count)
    recorded = len(answers) - counts["", "", "rejected"]
    return 200, {
        "recorded": recorded,
        "rejected": len(answers) - recorded,
        "results": [item.to_dict() for item in answers],
    }


async def record_batch(context: ServiceContext, body: object) -> Response:
    """:func:`record_batch_data` as a response."""
    status, data = await record_batch_data(context, body)
    return json_response(data, status_code=status)


def router(context: ServiceContext) -> APIRouter:
    """The completion routes."""
    routes = APIRouter(tags=["completions"])

    @routes.post(
        "/v1/completions",
        status_code=202,
        openapi_extra=body_doc(CompletionIn),
        responses=ERROR_RESPONSES,
        summary="Record a processor's completion",
        dependencies=context.auth.writers(),
    )
    async def post_completion(request: Request) -> Response:
        return await record(context, await read_json(request))

    @routes.post(
        "/v1/completions:batch",
        status_code=200,
        openapi_extra=body_doc(CompletionBatchIn),
        responses={**ERROR_RESPONSES, 413: {"description": "Over 1,000 reports or 4 MiB"}},
        summary="Record many completions, each answered on its own",
        dependencies=context.auth.writers(),
    )
    async def post_completions_batch(request: Request) -> Response:
        return await record_batch(context, await read_json(request, MAX_BATCH_BYTES))

    return routes
