"""``http(s)://...`` — POST the trigger JSON with an ``Idempotency-Key`` header."""

from __future__ import annotations

import httpx

from phasegate.errors import TransientDeliveryError
from phasegate.model import Trigger
from phasegate.redact import redact_url as redact


class HttpTransport:
    """POSTs each trigger; any 2xx means delivered, anything else is retried later."""

    def __init__(
        self, url: str, *, timeout: float = 10.0, client: httpx.Client | None = None
    ) -> None:
        self.url = url
        self._client = client or httpx.Client(
            timeout=timeout, headers={"User-Agent": "phasegate"}, follow_redirects=False
        )

    def deliver(self, trigger: Trigger) -> None:
        """POST the trigger message; raise TransientDeliveryError unless the answer is 2xx."""
        try:
            response = self._client.post(
                self.url,
                content=trigger.to_json(),
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": trigger.trigger_id,
                },
            )
        except httpx.HTTPError as exc:
            raise TransientDeliveryError(
                f"POST {redact(self.url)} failed: {type(exc).__name__}"
            ) from None
        if not response.is_success:
            raise TransientDeliveryError(
                f"POST {redact(self.url)} answered HTTP {response.status_code}"
            )

    def ping(self) -> None:
        """Open a connection to the receiver (any HTTP answer counts as reachable)."""
        try:
            self._client.head(self.url)
        except httpx.HTTPError as exc:
            raise TransientDeliveryError(
                f"{redact(self.url)} unreachable: {type(exc).__name__}"
            ) from None

    def describe(self) -> str:
        """The URL without credentials or query string."""
        return redact(self.url)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
