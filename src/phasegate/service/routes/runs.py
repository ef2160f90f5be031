"""``GET /v1/runs`` and ``GET /v1/runs/{run_key}``: each phase's state, from both stores."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from phasegate.orchestrator import PhaseStatus
from phasegate.service.body import READ_ERRORS
from phasegate.service.context import ServiceContext
from phasegate.service.errors import ApiError

MAX_RUNS = 500


def run_view(run_key: str, statuses: list[PhaseStatus]) -> dict[str, Any]:
    """One run as the API shows it."""
    return {"run_key": run_key, "phases": [s.to_dict() for s in statuses]}


def router(context: ServiceContext) -> APIRouter:
    """The run routes (reads: either token when one is configured)."""
    orchestrator = context.runtime.orchestrator
    routes = APIRouter(tags=["runs"], dependencies=context.auth.readers())

    @routes.get("/v1/runs", summary="Recent runs and each phase's state", responses=READ_ERRORS)
    def get_runs(
        limit: Annotated[int, Query(ge=1, le=MAX_RUNS, description="runs to show")] = 20,
    ) -> dict[str, Any]:
        keys = orchestrator.list_runs(limit)
        return {
            "pipeline": context.runtime.pipeline.name,
            "runs": [run_view(k, orchestrator.run_status(k)) for k in keys],
        }

    @routes.get(
        "/v1/runs/{run_key}",
        summary="One run: each phase's state, processors and trigger",
        responses=READ_ERRORS | {404: {"description": "No records for that run"}},
    )
    def get_run(run_key: str) -> dict[str, Any]:
        statuses = orchestrator.run_status(run_key)
        if all(s.started_at is None and s.trigger is None and not s.failed for s in statuses):
            raise ApiError(404, "unknown_run", f"no records for run {run_key!r}", "run_key")
        return run_view(run_key, statuses)

    return routes
