"""The completion routes answered as plain ASGI, ahead of the framework's layers.

``POST /v1/completions`` is the service's hot path: most of a request's CPU went to
FastAPI's and Starlette's middleware, routing and dependency layers, not to recording
the report. :class:`PhasegateApp` answers the two completion routes itself, with the same
checks in the same order (token, body size, JSON, the library's validation) and the
same error answers (:func:`~phasegate.service.errors.error_answer`); every other
request, and the routes' OpenAPI documentation, stay FastAPI's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.types import Receive, Scope, Send

from phasegate.errors import PhasegateError
from phasegate.service.body import MAX_BATCH_BYTES, MAX_BODY_BYTES
from phasegate.service.context import ServiceContext
from phasegate.service.errors import ApiError, ErrorAnswer
from phasegate.service.routes.completions import record_batch_data, record_data

Handler = Callable[[ServiceContext, object], Awaitable[tuple[int, Any]]]
"""A route's work on a decoded body: its status and the data to answer as JSON."""

_JSON_HEADER = (b"content-type", b"application/json")


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing to answer."""


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The body, or a 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"body over {limit} bytes")
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        chunk: bytes = message.get("body", b"")
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"body over {limit} bytes")
        if not message.get("more_body", False):
            return body


class FastRoutes:
    """The completion routes as ASGI: each path's body limit and handler."""

    def __init__(
        self,
        context: ServiceContext,
        answer_error: ErrorAnswer,
        routes: dict[str, tuple[int, Handler]],
    ) -> None:
        self.context = context
        self.answer_error = answer_error
        self.routes = routes

    def route(self, scope: Scope) -> tuple[int, Handler] | None:
        """The limit and handler of an HTTP ``POST`` this class answers, else None."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return self.routes.get(path)

    async def __call__(
        self, route: tuple[int, Handler], scope: Scope, receive: Receive, send: Send
    ) -> None:
        limit, handler = route
        try:
            auth = self.context.auth
            if auth.enabled:
                await auth.require_write(Request(scope))
            body = await _read_body(scope, receive, limit)
            try:
                decoded = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from None
            status, data = await handler(self.context, decoded)
        except _Disconnected:
            return
        except (ApiError, PhasegateError) as error:
            response = await self.answer_error(Request(scope, receive), error)
            await response(scope, receive, send)
            return
        except Exception as error:
            # As Starlette's outermost middleware does: answer 500, then let the server
            # log the bug.
            response = await self.answer_error(Request(scope, receive), error)
            await response(scope, receive, send)
            raise
        content = orjson.dumps(data)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON_HEADER, (b"content-length", str(len(content)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})


class PhasegateApp(FastAPI):
    """FastAPI, with the completion routes answered by :class:`FastRoutes` once set."""

    fast: FastRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast
        route = fast.route(scope) if fast is not None else None
        if fast is None or route is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await fast(route, scope, receive, send)


def fast_routes(context: ServiceContext, answer_error: ErrorAnswer) -> FastRoutes:
    """The completion routes, as :mod:`~phasegate.service.routes.completions` defines them."""
    return FastRoutes(
        context,
        answer_error,
        {
            "/v1/completions": (MAX_BODY_BYTES, record_data),
            "/v1/completions:batch": (MAX_BATCH_BYTES, record_batch_data),
        },
    )
