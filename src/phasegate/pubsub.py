"""Completions arriving from Google Cloud Pub/Sub: push envelopes, pulled messages and
CloudEvents decode here into one report; push requests are authorised here (a static
token or a Google-signed OIDC token); malformed messages are dead-lettered here.

A message's data is the completion JSON (``phase``, ``run_key``, ``processor``, optional
``status``, ``correlation_id``, ``metadata``); its ``correlation_id`` attribute, else its
message id, becomes the correlation id when the body has none.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.config import PubSubPushConfig, Secret
from phasegate.errors import PhasegateError, ValidationError
from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.orchestrator import CompletionResult, Orchestrator

log = logging.getLogger(__name__)

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
DEAD_LETTER_STATUSES = frozenset({400, 413, 422})
CERTS_TTL = 3600.0
CLOCK_SKEW_SECONDS = 10


class MalformedMessage(ValidationError):
    """A Pub/Sub message or envelope that no redelivery will make readable (HTTP 400)."""

    status = 400


class PushAuthError(PhasegateError):
    """A push request that is not authorised (401/403), or that cannot be checked now (503)."""

    field: str | None = None

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True, slots=True)
class PubSubReport:
    """A completion report carried by one Pub/Sub message."""

    report: Any
    message_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    subscription: str | None = None

    @property
    def correlation_id(self) -> str | None:
        """The ``correlation_id`` attribute, else the message id (the body's own one wins)."""
        return self.attributes.get("correlation_id") or self.message_id


def decode_data(
    data: bytes,
    attributes: Mapping[str, str] | None = None,
    message_id: str | None = None,
    subscription: str | None = None,
) -> PubSubReport:
    """A pulled message's raw data (JSON bytes) as a report; MalformedMessage if it is not
    a JSON object."""
    try:
        report = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deeply
        raise MalformedMessage(
            "message.data", "message.data is not a JSON object", code="malformed_body"
        ) from None
    if not isinstance(report, dict):
        raise MalformedMessage(
            "message.data", "message.data must be a JSON object", code="malformed_body"
        )
    return PubSubReport(report, message_id, dict(attributes or {}), subscription)


def decode_envelope(envelope: Any) -> PubSubReport:
    """A push envelope (or a Pub/Sub CloudEvent's data, which has the same shape):
    ``{"message": {"data": base64, "attributes", "messageId"}, "subscription"}``."""
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        raise MalformedMessage(
            "message", "expected a Pub/Sub push envelope with a message", code="malformed_envelope"
        )
    data = message.get("data")
    if not isinstance(data, str):
        raise MalformedMessage(
            "message.data", "message.data must be a base64 string", code="malformed_envelope"
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage(
            "message.data", "message.data is not base64", code="malformed_envelope"
        ) from None
    raw_attributes = message.get("attributes")
    attributes = {
        str(k): str(v)
        for k, v in (raw_attributes.items() if isinstance(raw_attributes, dict) else ())
    }
    message_id = message.get("messageId") or message.get("message_id")
    subscription = envelope.get("subscription")
    return decode_data(
        raw,
        attributes,
        message_id if isinstance(message_id, str) else None,
        subscription if isinstance(subscription, str) else None,
    )


def record_report(
    orchestrator: Orchestrator, message: PubSubReport, default_phase: str | None = None
) -> CompletionResult:
    """Validate the report's fields and record it; ``default_phase`` fills a missing phase
    (one function per old per-phase topic). Raises ValidationError or BothStoresFailed."""
    report = message.report
    if default_phase and isinstance(report, Mapping) and "phase" not in report:
        report = {**report, "phase": default_phase}
    completion = orchestrator.validate_report(report, default_correlation_id=message.correlation_id)
    [result] = orchestrator.record([completion])
    return result


def dead_letter(
    events: EventBus,
    source: str,
    code: str,
    reason: str,
    message: PubSubReport | None = None,
    *,
    message_id: str | None = None,
    subscription: str | None = None,
) -> None:
    """Log an ERROR line and alert for a message acknowledged without being recorded."""
    message_id = message_id or (message.message_id if message else None)
    subscription = subscription or (message.subscription if message else None)
    text = (
        f"dead-lettered Pub/Sub message {message_id or '(no id)'}"
        f"{f' from {subscription}' if subscription else ''} via {source}: {code}: {reason}; "
        "acknowledged without recording it (fix the publisher and publish it again)"
    )
    log.error(
        "%s",
        text,
        extra={"event": EventKind.MESSAGE_DEAD_LETTERED.value, "message_id": message_id},
    )
    events.emit(
        Event(
            EventKind.MESSAGE_DEAD_LETTERED,
            Severity.WARNING,
            source,
            text,
            details={"code": code, "message_id": message_id, "subscription": subscription},
        ),
        already_logged=True,
    )


class CachingRequest:
    """A google-auth HTTP request that keeps GET answers for their ``max-age``.

    Written by hand because google-auth fetches the signing certificates on every
    verification; this keeps one session and one copy of the certificates per instance.
    """

    def __init__(self, inner: Any | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if inner is None:
            from google.auth.transport.requests import Request  # noqa: PLC0415

            inner = Request()
        self._inner = inner
        self._clock = clock
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def __call__(
        self, url: str, method: str = "GET", body: Any = None, headers: Any = None, **kw: Any
    ) -> Any:
        """Answer from the cache while fresh; otherwise ask and keep a 200 answer."""
        if method != "GET":
            return self._inner(url, method=method, body=body, headers=headers, **kw)
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None and cached[0] > self._clock.monotonic():
                return cached[1]
        kw.setdefault("timeout", 10)
        response = self._inner(url, method=method, body=body, headers=headers, **kw)
        if response.status == 200:
            with self._lock:
                expiry = self._clock.monotonic() + _max_age(response.headers)
                self._cache[url] = (expiry, response)
        return response

    def forget(self) -> None:
        """Drop every cached answer (the signing keys rotated)."""
        with self._lock:
            self._cache.clear()


def _max_age(headers: Mapping[str, str] | None) -> float:
    for name, value in (headers or {}).items():
        if name.lower() != "cache-control":
            continue
        for directive in value.split(","):
            key, _, number = directive.strip().partition("=")
            if key.lower() == "max-age" and number.isdigit():
                return float(number)
    return CERTS_TTL


class PushAuthenticator:
    """Authorises push requests: today's static token, or a Google-signed OIDC token from
    an allowed service account for the configured audience."""

    def __init__(
        self,
        settings: PubSubPushConfig | None,
        token: Secret | None,
        *,
        request: Any | None = None,
    ) -> None:
        self.settings = settings or PubSubPushConfig()
        self.token = token
        self._request = request
        self._request_lock = threading.Lock()

    @property
    def oidc(self) -> bool:
        """Whether Google-signed tokens are verified."""
        return self.settings.audience is not None

    def authorize(self, authorization: str | None, query_token: str | None = None) -> str:
        """Who sent the request (``token``, a service-account email, or ``anyone`` when no
        credential is configured); raises PushAuthError otherwise."""
        if self.token is None and not self.oidc:
            return "anyone"
        scheme, _, bearer = (authorization or "").partition(" ")
        bearer = bearer.strip() if scheme.lower() == "bearer" else ""
        if self.token is not None:
            expected = self.token.reveal().encode()
            for given in (bearer, query_token or ""):
                if given and hmac.compare_digest(given.encode(), expected):
                    return "token"
        if self.oidc and bearer:
            return self.verify(bearer)
        raise PushAuthError(401, "unauthorized", "a valid bearer token is required")

    def _transport(self) -> Any:
        with self._request_lock:
            if self._request is None:
                self._request = CachingRequest()
            return self._request

    def verify(self, token: str) -> str:
        """Verify a Google-signed ID token; the service-account email it vouches for."""
        claims = self._claims(token)
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise PushAuthError(401, "wrong_issuer", "the token was not issued by Google")
        email = str(claims.get("email") or "").lower()
        if not email:
            raise PushAuthError(403, "no_email", "the token names no service account")
        if claims.get("email_verified") is not True:
            raise PushAuthError(403, "email_not_verified", f"{email}: email is not verified")
        if email not in self.settings.allowed_service_accounts:
            raise PushAuthError(
                403,
                "service_account_not_allowed",
                f"{email} is not in [server.pubsub_push] allowed_service_accounts",
            )
        return email

    def _claims(self, token: str) -> Mapping[str, Any]:
        from google.auth import exceptions  # noqa: PLC0415
        from google.oauth2 import id_token  # noqa: PLC0415

        request = self._transport()
        for attempt in (1, 2):
            try:
                claims: Mapping[str, Any] = id_token.verify_token(
                    token,
                    request,
                    audience=self.settings.audience,
                    certs_url=self.settings.certs_url,
                    clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
                )
            except exceptions.TransportError:
                raise PushAuthError(
                    503, "certs_unavailable", "Google's signing certificates cannot be fetched"
                ) from None
            except (ValueError, exceptions.GoogleAuthError) as exc:
                text = str(exc)
                if attempt == 1 and "key id" in text and isinstance(request, CachingRequest):
                    request.forget()  # signed with a key newer than the cached certificates
                    continue
                raise _token_error(text) from None
            return claims
        raise PushAuthError(401, "invalid_token", "the token cannot be verified")


def _token_error(text: str) -> PushAuthError:
    lowered = text.lower()
    if "audience" in lowered:
        return PushAuthError(
            401, "wrong_audience", "the token is for another audience than [server.pubsub_push]"
        )
    if "expired" in lowered or "too late" in lowered:
        return PushAuthError(401, "token_expired", "the token has expired")
    if "signature" in lowered or "key id" in lowered:
        return PushAuthError(
            401, "invalid_signature", "the token's signature does not match Google's keys"
        )
    return PushAuthError(401, "invalid_token", "the token is not a valid Google ID token")


class PushEndpoint:
    """What ``POST /v1/pubsub/push`` needs: authorise, decode, and dead-letter."""

    def __init__(
        self,
        settings: PubSubPushConfig | None,
        token: Secret | None,
        events: EventBus,
        *,
        request: Any | None = None,
    ) -> None:
        self.settings = settings or PubSubPushConfig()
        self.events = events
        self.auth = PushAuthenticator(settings, token, request=request)

    def authorize(self, authorization: str | None, query_token: str | None = None) -> str:
        """See :meth:`PushAuthenticator.authorize`."""
        return self.auth.authorize(authorization, query_token)

    @staticmethod
    def decode(envelope: Any) -> PubSubReport:
        """See :func:`decode_envelope`."""
        return decode_envelope(envelope)

    def dead_letter(
        self, status: int, code: str, reason: str, envelope: Any = None
    ) -> dict[str, Any] | None:
        """The 200 body acknowledging a message refused for its content (400/413/422) when
        ``dead_letter`` is on, after logging and alerting it; ``None`` to refuse as usual."""
        if not self.settings.dead_letter or status not in DEAD_LETTER_STATUSES:
            return None
        message = envelope.get("message") if isinstance(envelope, dict) else None
        message_id = message.get("messageId") if isinstance(message, dict) else None
        subscription = envelope.get("subscription") if isinstance(envelope, dict) else None
        dead_letter(
            self.events,
            "pubsub-push",
            code,
            reason,
            message_id=message_id if isinstance(message_id, str) else None,
            subscription=subscription if isinstance(subscription, str) else None,
        )
        return {"dead_lettered": True, "error": {"code": code, "message": reason}}
