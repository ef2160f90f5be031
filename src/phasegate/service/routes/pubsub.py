"""``POST /v1/pubsub/push``: a Pub/Sub push envelope carrying a completion report."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from phasegate.service.body import ERROR_RESPONSES, body_doc, read_json
from phasegate.service.context import ServiceContext
from phasegate.service.errors import ApiError
from phasegate.service.routes.completions import record


class PubSubMessage(BaseModel):
    """The ``message`` of a Pub/Sub push envelope."""

    data: str = Field(description="base64 of the completion JSON")
    attributes: dict[str, str] | None = None
    messageId: str | None = None  # noqa: N815 - Pub/Sub's own spelling


class PubSubEnvelope(BaseModel):
    """A Pub/Sub push request."""

    message: PubSubMessage
    subscription: str | None = None


def decode_envelope(envelope: Any) -> tuple[Any, str | None]:
    """The report inside a push envelope and its correlation id (attribute or message id)."""
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
    return decoded, correlation if isinstance(correlation, str) else None


def router(context: ServiceContext) -> APIRouter:
    """The Pub/Sub push route."""
    routes = APIRouter(tags=["completions"])

    @routes.post(
        "/v1/pubsub/push",
        status_code=202,
        openapi_extra=body_doc(PubSubEnvelope),
        responses=ERROR_RESPONSES,
        summary="Record a completion from a Pub/Sub push subscription",
        dependencies=[Depends(context.auth.require_push)],
    )
    async def post_pubsub(request: Request) -> Response:
        report, correlation = decode_envelope(await read_json(request))
        return await record(context, report, correlation)

    return routes
