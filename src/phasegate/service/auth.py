"""Who may call what: the main token for everything, the read token for reads only.

Writes take the main token as a bearer header (or ``?token=`` on the Pub/Sub push
route, whose subscriptions cannot send headers). Reads (runs, metrics, the
dashboard) take either token as a bearer header or the dashboard's cookie. The
cookie holds a value derived from the token (HMAC), never the token itself, so it
cannot be replayed as a bearer token. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from phasegate.config import Secret
from phasegate.service.errors import ApiError

COOKIE_NAME = "phasegate_session"
_COOKIE_CONTEXT = b"phasegate dashboard session v1"


def _matches(given: str, secrets: tuple[Secret, ...]) -> bool:
    # Compare against every accepted secret, so timing does not tell which one matched.
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(given.encode(), secret.reveal().encode())
    return found


def session_value(token: Secret) -> str:
    """The dashboard cookie's value for ``token``."""
    return hmac.new(token.reveal().encode(), _COOKIE_CONTEXT, hashlib.sha256).hexdigest()


def bearer(request: Request) -> str:
    """The bearer token of ``request``'s Authorization header, or ``""``."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


@dataclass(frozen=True, slots=True)
class Auth:
    """The configured tokens; with no ``token`` every endpoint is open."""

    token: Secret | None = None
    read_token: Secret | None = None

    @property
    def enabled(self) -> bool:
        """A token is configured."""
        return self.token is not None

    @property
    def _readers(self) -> tuple[Secret, ...]:
        return tuple(t for t in (self.token, self.read_token) if t is not None)

    def token_grants_read(self, given: str) -> bool:
        """``given`` is the main or the read token."""
        return bool(given) and _matches(given, self._readers)

    def can_write(self, request: Request, *, query_token: bool = False) -> bool:
        """The request carries the main token (``?token=`` too when ``query_token``)."""
        if self.token is None:
            return True
        given = bearer(request)
        if not given and query_token:
            given = request.query_params.get("token", "")
        return bool(given) and _matches(given, (self.token,))

    def can_read(self, request: Request) -> bool:
        """The request carries either token as a bearer, or a valid dashboard cookie."""
        if self.token is None:
            return True
        if self.token_grants_read(bearer(request)):
            return True
        cookie = request.cookies.get(COOKIE_NAME, "")
        return bool(cookie) and _matches(
            cookie, tuple(Secret(session_value(t)) for t in self._readers)
        )

    def session_for(self, given: str) -> str | None:
        """The cookie value to set for a token typed into the dashboard, if it is valid."""
        for secret in self._readers:
            if hmac.compare_digest(given.encode(), secret.reveal().encode()):
                return session_value(secret)
        return None

    # -- FastAPI dependencies --------------------------------------------------------------
    # A route's checks are attached only when a token is configured: an open endpoint
    # pays nothing per request for a check that always passes (FastAPI resolves every
    # declared dependency on every request).

    def writers(self) -> list[Any]:
        """The dependencies of a write route."""
        return [Depends(self.require_write)] if self.enabled else []

    def readers(self) -> list[Any]:
        """The dependencies of a read route."""
        return [Depends(self.require_read)] if self.enabled else []

    # Coroutines on purpose: FastAPI runs a plain function dependency in its thread pool,
    # a hop per request for a comparison of two strings.

    async def require_write(self, request: Request) -> None:
        """Dependency of the write routes: 401 without the main token."""
        if not self.can_write(request):
            raise ApiError(401, "unauthorized", "a valid bearer token is required")

    async def require_push(self, request: Request) -> None:
        """Dependency of the Pub/Sub push route: the main token, as a header or ``?token=``."""
        if not self.can_write(request, query_token=True):
            raise ApiError(401, "unauthorized", "a valid bearer token is required")

    async def require_read(self, request: Request) -> None:
        """Dependency of the read routes: 401 without either token or the dashboard cookie."""
        if not self.can_read(request):
            raise ApiError(401, "unauthorized", "a valid bearer token (or read token) is required")
