"""``POST /v1/runs/{run_key}/rerun``: a thin shell over ``Orchestrator.rerun``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from phasegate.errors import ValidationError
from phasegate.service.body import ERROR_RESPONSES, body_doc, read_json
from phasegate.service.context import ServiceContext
from phasegate.service.errors import ApiError


class RerunIn(BaseModel):
    """The body of a rerun request."""

    phase: str = Field(description="The phase to rerun; every phase downstream reruns too")
    correlation_id: str | None = Field(None, max_length=256)


def router(context: ServiceContext) -> APIRouter:
    """The rerun route (a write: the write token when one is configured)."""
    orchestrator = context.runtime.orchestrator
    routes = APIRouter(tags=["runs"])

    @routes.post(
        "/v1/runs/{run_key}/rerun",
        status_code=202,
        openapi_extra=body_doc(RerunIn),
        responses=ERROR_RESPONSES | {404: {"description": "No records for that run"}},
        summary="Rerun a phase and every phase downstream of it for a run",
        dependencies=context.auth.writers(),
    )
    async def post_rerun(run_key: str, request: Request) -> JSONResponse:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "malformed_body", "body must be a JSON object")
        unknown = sorted(set(body) - set(RerunIn.model_fields))
        if unknown:
            raise ApiError(422, "unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
        if not isinstance(body.get("phase"), str):
            raise ApiError(422, "missing_field", "phase is required (a string)", "phase")
        correlation = body.get("correlation_id")
        try:
            result = await run_in_threadpool(
                orchestrator.rerun,
                body["phase"],
                run_key,
                correlation_id=correlation if isinstance(correlation, str) else None,
            )
        except ValidationError as exc:
            if exc.code == "unknown_run":
                raise ApiError(404, exc.code, exc.message, exc.field) from None
            raise
        signal = result.trigger
        return JSONResponse(
            {
                "trigger_id": signal.trigger_id,
                "phase": signal.phase,
                "run_key": signal.run_key,
                "attempt": signal.attempt,
                "claimed": result.claimed,
                "deferred": result.deferred,
                "message": signal.to_message(),
            },
            status_code=202,
        )

    return routes
