"""``POST /v1/pubsub/push``: a Pub/Sub push envelope carrying a completion report.

Authorised by the static token or a Google-signed OIDC token, decoded and dead-lettered
by :class:`phasegate.pubsub.PushEndpoint`; recorded like ``POST /v1/completions``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from phasegate.errors import ValidationError, describe_error
from phasegate.pubsub import PushAuthError, PushEndpoint
from phasegate.service.body import ERROR_RESPONSES, body_doc, json_response, read_json
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


PUSH_RESPONSES = {
    **ERROR_RESPONSES,
    403: {"description": "OIDC token from a service account that is not allowed"},
}


def router(context: ServiceContext) -> APIRouter:
    """The Pub/Sub push route."""
    routes = APIRouter(tags=["completions"])
    push = PushEndpoint(
        context.runtime.pipeline.server.pubsub_push, context.auth.token, context.runtime.events
    )

    @routes.post(
        "/v1/pubsub/push",
        status_code=202,
        openapi_extra=body_doc(PubSubEnvelope),
        responses=PUSH_RESPONSES,
        summary="Record a completion from a Pub/Sub push subscription",
    )
    async def post_pubsub(request: Request) -> Response:
        envelope = None
        try:
            push.authorize(request.headers.get("authorization"), request.query_params.get("token"))
            envelope = await read_json(request)
            pushed = push.decode(envelope)
            return await record(context, pushed.report, pushed.correlation_id)
        except (ApiError, PushAuthError) as error:
            status, code, message, field = error.status, error.code, error.message, error.field
        except ValidationError as error:
            status, code = describe_error(error).http_status, error.code
            message, field = error.message, error.field
        acked = push.dead_letter(status, code, message, envelope)
        if acked is None:
            raise ApiError(status, code, message, field)
        return json_response(acked, status_code=200)

    return routes
