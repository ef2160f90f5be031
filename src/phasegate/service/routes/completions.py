"""``POST /v1/completions``: a thin shell over ``Runtime.record_report``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from phasegate.errors import BothStoresFailed, ValidationError
from phasegate.metrics import Metrics
from phasegate.recording import Recorded
from phasegate.service.body import ERROR_RESPONSES, body_doc, read_json
from phasegate.service.context import ServiceContext


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


async def record(
    context: ServiceContext, body: object, default_correlation_id: str | None = None
) -> JSONResponse:
    """Record a decoded report (the dispatcher loop delivers what it claims): 202."""
    with counted(context.metrics, body):
        recorded: Recorded = await run_in_threadpool(
            context.runtime.record_report,
            body,
            default_correlation_id=default_correlation_id,
            deliver=False,
        )
    completion = recorded.result.completion
    context.metrics.completions.labels(completion.phase, completion.status.value, "recorded").inc()
    return JSONResponse(recorded.result.to_dict(), status_code=202)


def router(context: ServiceContext) -> APIRouter:
    """The completion routes."""
    routes = APIRouter(tags=["completions"])

    @routes.post(
        "/v1/completions",
        status_code=202,
        openapi_extra=body_doc(CompletionIn),
        responses=ERROR_RESPONSES,
        summary="Record a processor's completion",
        dependencies=[Depends(context.auth.require_write)],
    )
    async def post_completion(request: Request) -> Response:
        return await record(context, await read_json(request))

    return routes
