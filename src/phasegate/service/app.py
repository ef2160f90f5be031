"""The ASGI app: thin routes over the orchestrator, the health checker and the metrics."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from html import escape
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from phasegate import __version__
from phasegate.config import Secret
from phasegate.errors import BothStoresFailed, ValidationError
from phasegate.events import Event, EventKind, Severity
from phasegate.health import HealthChecker
from phasegate.metrics import Metrics
from phasegate.orchestrator import CompletionResult
from phasegate.runtime import Runtime
from phasegate.service.dashboard import render_dashboard
from phasegate.service.dashboard_run import read_run, render_run_page

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_RUNS = 500


class CompletionIn(BaseModel):
    """A completion report (documentation of the body; validation is the orchestrator's)."""

    phase: str = Field(description="A phase of the pipeline")
    run_key: str = Field(description="The run, e.g. 2026-01-28")
    processor: str = Field(description="A processor expected in that phase")
    status: str = Field("success", description="success or failed")
    correlation_id: str | None = Field(None, max_length=256)
    metadata: dict[str, Any] | None = Field(None, description="A JSON object, at most 16 KiB")


class RerunIn(BaseModel):
    """The body of ``POST /v1/runs/{run_key}/rerun``."""

    phase: str = Field(description="the phase to rerun; every phase downstream reruns too")
    correlation_id: str | None = Field(None, max_length=256)


class PubSubMessage(BaseModel):
    """The ``message`` of a Pub/Sub push envelope."""

    data: str = Field(description="base64 of the completion JSON")
    attributes: dict[str, str] | None = None
    messageId: str | None = None  # noqa: N815 - Pub/Sub's own spelling


class PubSubEnvelope(BaseModel):
    """A Pub/Sub push request."""

    message: PubSubMessage
    subscription: str | None = None


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "field"}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": error.code, "message": error.message, "field": error.field}},
        status_code=error.status,
        headers={"WWW-Authenticate": "Bearer"} if error.status == 401 else None,
    )


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": model.model_json_schema(ref_template="#/components/schemas/{model}")
                }
            },
        }
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON or envelope"},
    401: {"description": "Missing or wrong bearer token"},
    413: {"description": "Body over 64 KiB"},
    422: {"description": "Invalid field; the error names it"},
    503: {"description": "Neither store could record it"},
}


def create_app(
    runtime: Runtime,
    *,
    health: HealthChecker | None = None,
    metrics: Metrics | None = None,
    token: Secret | None = None,
) -> FastAPI:
    """The FastAPI app serving ``runtime``."""
    pipeline = runtime.pipeline
    orchestrator = runtime.orchestrator
    if health is None:
        health = HealthChecker(
            {
                "primary_store": runtime.tracker.primary.ping,
                "backup_store": runtime.tracker.backup.ping,
                "trigger_transport": runtime.transport.ping,
            },
            ttl=pipeline.server.health_cache.total_seconds(),
            timeout=pipeline.server.health_timeout.total_seconds(),
            clock=runtime.tracker.clock,
            version=__version__,
        )
    metrics = metrics or Metrics(runtime, health)
    token = token if token is not None else pipeline.server.token
    app = FastAPI(
        title="phasegate",
        version=__version__,
        description=f"Exactly-once phase triggers for pipeline {pipeline.name!r}.",
    )
    app.state.runtime = runtime
    app.state.health = health
    app.state.metrics = metrics

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        metrics.rejected.labels(error.code).inc()
        return _error_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        runtime.events.emit(
            Event(
                EventKind.UNEXPECTED_ERROR,
                Severity.CRITICAL,
                "service",
                f"unexpected {type(error).__name__} in "
                f"{request.method} {request.url.path}: {error}",
                error=error,
            )
        )
        return _error_response(
            ApiError(500, "internal", "internal error; it has been logged and alerted")
        )

    def authorize(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            given = (
                request.query_params.get("token", "")
                if request.url.path.endswith("/pubsub/push")
                else ""
            )
        if not given or not hmac.compare_digest(given.encode(), token.reveal().encode()):
            raise ApiError(401, "unauthorized", "a valid bearer token is required")

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise ApiError(413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from None

    async def record(report: Any, default_correlation: str | None = None) -> JSONResponse:
        if not isinstance(report, dict):
            raise ApiError(400, "malformed_body", "body must be a JSON object")
        unknown = sorted(set(report) - set(CompletionIn.model_fields))
        if unknown:
            raise ApiError(422, "unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
        for required in ("phase", "run_key", "processor"):
            if required not in report:
                raise ApiError(422, "missing_field", f"{required} is required", required)
        try:
            result: CompletionResult = await run_in_threadpool(
                orchestrator.handle_completion,
                report["phase"],
                report["run_key"],
                report["processor"],
                status=report.get("status", "success"),
                correlation_id=report.get("correlation_id") or default_correlation,
                metadata=report.get("metadata"),
            )
        except ValidationError as exc:
            metrics.completions.labels("", str(report.get("status", "")), "rejected").inc()
            raise ApiError(422, exc.code, exc.message, exc.field) from None
        except BothStoresFailed:
            metrics.completions.labels(
                str(report["phase"]), str(report.get("status")), "failed"
            ).inc()
            raise ApiError(
                503, "stores_unavailable", "neither store could record the completion; retry later"
            ) from None
        completion = result.completion
        metrics.completions.labels(completion.phase, completion.status.value, "recorded").inc()
        return JSONResponse(
            result.to_dict(),
            status_code=202,
        )

    @app.post(
        "/v1/completions",
        status_code=202,
        openapi_extra=_body_doc(CompletionIn),
        responses=ERROR_RESPONSES,
        summary="Record a processor's completion",
    )
    async def post_completion(request: Request) -> Response:
        authorize(request)
        return await record(await read_json(request))

    @app.post(
        "/v1/pubsub/push",
        status_code=202,
        openapi_extra=_body_doc(PubSubEnvelope),
        responses=ERROR_RESPONSES,
        summary="Record a completion from a Pub/Sub push subscription",
    )
    async def post_pubsub(request: Request) -> Response:
        authorize(request)
        envelope = await read_json(request)
        message = envelope.get("message") if isinstance(envelope, dict) else None
        if not isinstance(message, dict):
            raise ApiError(
                400,
                "malformed_envelope",
                "expected a Pub/Sub push envelope with a message",
                "message",
            )
        data = message.get("data")
        if not isinstance(data, str):
            raise ApiError(
                400, "malformed_envelope", "message.data must be a base64 string", "message.data"
            )
        try:
            decoded = json.loads(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError):
            raise ApiError(
                400,
                "malformed_envelope",
                "message.data is not base64 of a JSON object",
                "message.data",
            ) from None
        raw_attributes = message.get("attributes")
        attributes: dict[str, Any] = raw_attributes if isinstance(raw_attributes, dict) else {}
        correlation = attributes.get("correlation_id") or message.get("messageId")
        return await record(decoded, correlation if isinstance(correlation, str) else None)

    def run_view(run_key: str, statuses: list[Any]) -> dict[str, Any]:
        return {"run_key": run_key, "phases": [s.to_dict() for s in statuses]}

    @app.get("/v1/runs", summary="Recent runs and each phase's state")
    def get_runs(limit: int = 20) -> dict[str, Any]:
        if not 1 <= limit <= MAX_RUNS:
            raise ApiError(422, "invalid", f"limit must be from 1 to {MAX_RUNS}", "limit")
        try:
            keys = orchestrator.list_runs(limit)
            return {
                "pipeline": pipeline.name,
                "runs": [run_view(k, orchestrator.run_status(k)) for k in keys],
            }
        except BothStoresFailed:
            raise ApiError(503, "stores_unavailable", "neither store can be read") from None

    @app.get("/v1/runs/{run_key}", summary="One run: each phase's state, processors and trigger")
    def get_run(run_key: str) -> dict[str, Any]:
        try:
            statuses = orchestrator.run_status(run_key)
        except ValidationError as exc:
            raise ApiError(422, exc.code, exc.message, exc.field) from None
        except BothStoresFailed:
            raise ApiError(503, "stores_unavailable", "neither store can be read") from None
        if all(s.started_at is None and s.trigger is None and not s.failed for s in statuses):
            raise ApiError(404, "unknown_run", f"no records for run {run_key!r}", "run_key")
        return run_view(run_key, statuses)

    @app.post(
        "/v1/runs/{run_key}/rerun",
        status_code=202,
        openapi_extra=_body_doc(RerunIn),
        responses=ERROR_RESPONSES | {404: {"description": "No records for this run"}},
        summary="Rerun a phase and every phase downstream of it for a run",
    )
    async def post_rerun(run_key: str, request: Request) -> JSONResponse:
        authorize(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "malformed_body", "body must be a JSON object")
        unknown = sorted(set(body) - set(RerunIn.model_fields))
        if unknown:
            raise ApiError(422, "unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
        if not isinstance(body.get("phase"), str):
            raise ApiError(422, "missing_field", "phase is required (a string)", "phase")
        try:
            result = await run_in_threadpool(
                orchestrator.rerun,
                body["phase"],
                run_key,
                correlation_id=body.get("correlation_id"),
            )
        except ValidationError as exc:
            status = 404 if exc.code == "unknown_run" else 422
            raise ApiError(status, exc.code, exc.message, exc.field) from None
        except BothStoresFailed:
            raise ApiError(503, "stores_unavailable", "neither store could record it") from None
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

    @app.get("/health", summary="Dependency health (cached, single-flight)")
    async def get_health() -> JSONResponse:
        report, cached = await health.report()
        return JSONResponse(
            health.to_dict(report, cached), status_code=200 if report.healthy else 503
        )

    @app.get("/livez", summary="Liveness: answers without touching dependencies")
    async def get_livez() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def get_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/runs/{run_key}",
        response_class=HTMLResponse,
        summary="Dashboard page of one run",
        include_in_schema=False,
    )
    def get_run_page(run_key: str) -> HTMLResponse:
        try:
            records = read_run(runtime, run_key)
        except ValidationError as exc:
            return HTMLResponse(f"<p>{escape(exc.message)}</p>", status_code=422)
        if records.empty:
            return HTMLResponse(
                f"<p>no records for run {escape(run_key)}</p><p><a href='../'>all runs</a></p>",
                status_code=404,
            )
        return HTMLResponse(render_run_page(pipeline, records))

    @app.get("/", response_class=HTMLResponse, summary="Dashboard", include_in_schema=False)
    def get_dashboard(limit: int = 14) -> HTMLResponse:
        return HTMLResponse(render_dashboard(runtime, limit=max(1, min(limit, 60))))

    return app
