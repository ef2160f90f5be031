"""The service's one exception handler: every error becomes ``{"error": {...}}``.

phasegate's own exceptions are translated by :func:`phasegate.errors.describe_error`
(the same table the CLI uses); the service adds only what is HTTP's alone (bad JSON,
oversized bodies, tokens, unknown runs) as :class:`ApiError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from phasegate.errors import PhasegateError, describe_error
from phasegate.events import Event, EventKind, Severity
from phasegate.metrics import Metrics
from phasegate.runtime import Runtime


class ApiError(Exception):
    """An error only HTTP has, answered as ``{"error": {"code", "message", "field"}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    """The error shape, with ``WWW-Authenticate`` on a 401."""
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}},
        status_code=status,
        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None,
    )


ErrorAnswer = Callable[[Request, Exception], Awaitable[JSONResponse]]
"""Turns an error a route raised into its answer."""


def install_error_handler(app: FastAPI, runtime: Runtime, metrics: Metrics) -> ErrorAnswer:
    """Answer every error raised by a route in the error shape, counted and, if a bug,
    alerted; the handler, for routes answered ahead of FastAPI (:mod:`.fast`)."""
    answer = error_answer(runtime, metrics)
    for kind in (ApiError, RequestValidationError, PhasegateError, Exception):
        app.add_exception_handler(kind, answer)
    return answer


def error_answer(runtime: Runtime, metrics: Metrics) -> ErrorAnswer:
    """The error shape's answer to any error, counted and, if a bug, alerted."""

    async def answer(request: Request, error: Exception) -> JSONResponse:
        if isinstance(error, ApiError):
            status, code, message, field = error.status, error.code, error.message, error.field
        elif isinstance(error, RequestValidationError):
            problem = error.errors()[0] if error.errors() else {}
            location = [str(part) for part in problem.get("loc", ()) if part != "query"]
            field = location[-1] if location else None
            status, code, message = 422, "invalid", str(problem.get("msg", "invalid request"))
        else:
            info = describe_error(error, runtime.scrubber.scrub)
            status, code, message, field = info.http_status, info.code, info.message, info.field
            if info.unexpected:
                runtime.events.emit(
                    Event(
                        EventKind.UNEXPECTED_ERROR,
                        Severity.CRITICAL,
                        "service",
                        f"unexpected {type(error).__name__} in "
                        f"{request.method} {request.url.path}: {info.detail}",
                        error=error,
                    )
                )
        if 400 <= status < 500:
            metrics.rejected.labels(code).inc()
        return error_response(status, code, message, field)

    return answer
