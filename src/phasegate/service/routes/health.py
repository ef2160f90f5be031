"""``/health`` and ``/livez`` (always open, no secret in them) and ``/metrics`` (a read)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from phasegate.service.body import READ_ERRORS
from phasegate.service.context import ServiceContext


def router(context: ServiceContext) -> APIRouter:
    """The health and metrics routes."""
    health = context.health
    routes = APIRouter(tags=["health"])

    @routes.get("/health", summary="Dependency health (cached, single-flight)")
    async def get_health() -> JSONResponse:
        report, cached = await health.report()
        return JSONResponse(
            health.to_dict(report, cached), status_code=200 if report.healthy else 503
        )

    @routes.get("/livez", summary="Liveness: answers without touching dependencies")
    async def get_livez() -> dict[str, str]:
        return {"status": "alive"}

    @routes.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses=READ_ERRORS,
        dependencies=context.auth.readers(),
    )
    def get_metrics() -> Response:
        return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return routes
