"""Reading request bodies: the size limit and JSON decoding are the service's own checks."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel

from phasegate.service.errors import ApiError

MAX_BODY_BYTES = 64 * 1024


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, or a 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"body over {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"body over {limit} bytes")
    return body


async def read_json(request: Request) -> Any:
    """The decoded JSON body; 400 when it is not JSON, 413 when it is too large."""
    body = await read_body(request)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from None


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a route that reads its body by hand."""
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
"""The error answers the write routes document."""

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong token (when one is configured)"},
    503: {"description": "Neither store can be read"},
}
"""The error answers the read routes document."""
