"""Reading request bodies: the size limit and JSON decoding are the service's own checks."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from phasegate.service.errors import ApiError

MAX_BODY_BYTES = 64 * 1024
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_BATCH_ITEMS = 1000


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, or a 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    # From the ASGI scope's raw headers (names lowercase bytes): building Starlette's
    # Headers for one lookup cost more than the rest of the read.
    declared = next((v for k, v in request.scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"body over {limit} bytes")
    return bytes(body)


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    """The decoded JSON body; 400 when it is not JSON, 413 when it is too large."""
    body = await read_body(request, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from None


def json_response(data: Any, status_code: int = 200) -> Response:
    """``data`` serialised once, by orjson, as the response body."""
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/X"}`` replaced by X's schema (no cycles here)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, definitions) for value in node]
    return node


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a route that reads its body by hand; nested models are
    inlined, so every reference in the document resolves."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(schema, definitions)}},
        }
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON or envelope"},
    401: {"description": "Missing or wrong bearer token"},
    413: {"description": "Body over 64 KiB"},
    422: {"description": "Invalid field; the error names it"},
    503: {"description": "Neither store could record it"},
}
"""The error answers the write routes document."""

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong token (when one is configured)"},
    503: {"description": "Neither store can be read"},
}
"""The error answers the read routes document."""
