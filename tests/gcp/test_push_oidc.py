"""``POST /v1/pubsub/push``: Google-signed OIDC tokens (signed here with a local key and
served by a local certificate endpoint), the static token, and dead-lettering."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from google.auth import crypt, jwt

from phasegate.errors import ConfigError
from phasegate.events import EventKind
from phasegate.service import create_app
from phasegate.testing import FakeClock
from support import PIPELINE_TEXT, Harness, RecordingServer

RUN = "2026-01-28"
AUDIENCE = "https://phasegate.example.run.app/v1/pubsub/push"
PUSHER = "pubsub-push@my-project.iam.gserviceaccount.com"
KID = "test-key-1"


class SigningKey:
    """An RSA key with a self-signed certificate, as Google's v1 certs endpoint serves."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phasegate-test")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, kid: str = KID, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": AUDIENCE,
            "azp": "1234567890",
            "sub": "1234567890",
            "email": PUSHER,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        } | overrides
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        signer = crypt.RSASigner.from_string(pem, key_id=kid)
        return jwt.encode(signer, claims).decode()


@pytest.fixture(scope="module")
def google_key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def certs(google_key: SigningKey) -> Iterator[RecordingServer]:
    """A loopback stand-in for https://www.googleapis.com/oauth2/v1/certs."""
    body = json.dumps({KID: google_key.certificate_pem}).encode()
    server = RecordingServer(
        default=(
            200,
            {"Content-Type": "application/json", "Cache-Control": "public, max-age=19000"},
            body,
        )
    )
    with server:
        yield server


def push_pipeline(certs_url: str, *, dead_letter: bool = False, token: bool = False) -> str:
    return (
        PIPELINE_TEXT
        + ('\n[server]\ntoken = "static-s3cret-token"\n' if token else "\n[server]\n")
        + f"""
[server.pubsub_push]
audience = "{AUDIENCE}"
allowed_service_accounts = ["{PUSHER}"]
certs_url = "{certs_url}"
dead_letter = {"true" if dead_letter else "false"}
"""
    )


def envelope(body: Any = None, raw: str | None = None) -> dict[str, Any]:
    report = body or {"phase": "extract", "run_key": RUN, "processor": "api"}
    data = raw if raw is not None else base64.b64encode(json.dumps(report).encode()).decode()
    return {
        "message": {"data": data, "messageId": "m-7", "attributes": {}},
        "subscription": "projects/my-project/subscriptions/phasegate-push",
    }


@pytest.fixture
def harness_for(tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    made: list[Harness] = []

    def make(text: str) -> Harness:
        harness = Harness(tmp_path / str(len(made)), clock, text=text)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.runtime.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_google_signed_token_from_an_allowed_account_is_accepted(
    harness_for: Any, certs: RecordingServer, google_key: SigningKey
) -> None:
    """A valid token records the completion; the certificates are fetched once and cached."""
    harness = harness_for(push_pipeline(certs.url))
    client = TestClient(create_app(harness.runtime))
    first = client.post("/v1/pubsub/push", json=envelope(), headers=bearer(google_key.sign()))
    assert first.status_code == 202, first.text
    assert first.json()["correlation_id"] == "m-7"
    second = client.post(
        "/v1/pubsub/push",
        json=envelope({"phase": "extract", "run_key": RUN, "processor": "files"}),
        headers=bearer(google_key.sign()),
    )
    assert second.json()["claimed"] is True
    assert len(certs.requests) == 1
    assert certs.requests[0].method == "GET"


@pytest.mark.parametrize(
    ("claims", "status", "code"),
    [
        ({"aud": "https://someone-else.example/push"}, 401, "wrong_audience"),
        (
            {"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600},
            401,
            "token_expired",
        ),
        (
            {"email": "intruder@evil-project.iam.gserviceaccount.com"},
            403,
            "service_account_not_allowed",
        ),
        ({"email_verified": False}, 403, "email_not_verified"),
        ({"iss": "https://evil.example"}, 401, "wrong_issuer"),
    ],
)
def test_tokens_that_are_not_for_us_are_refused_with_a_clear_code(
    harness_for: Any,
    certs: RecordingServer,
    google_key: SigningKey,
    claims: dict[str, Any],
    status: int,
    code: str,
) -> None:
    """Wrong audience, expiry, issuer, an unlisted or unverified email: 401/403, nothing recorded."""
    harness = harness_for(push_pipeline(certs.url, dead_letter=True))
    client = TestClient(create_app(harness.runtime))
    response = client.post(
        "/v1/pubsub/push", json=envelope(), headers=bearer(google_key.sign(**claims))
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert harness.tracker.primary.completions(RUN) == []
    assert harness.events_of(EventKind.MESSAGE_DEAD_LETTERED) == []


def test_a_token_signed_by_another_key_is_refused(
    harness_for: Any, certs: RecordingServer, google_key: SigningKey
) -> None:
    """A forged signature under Google's key id, and garbage, both answer 401."""
    harness = harness_for(push_pipeline(certs.url))
    client = TestClient(create_app(harness.runtime))
    forged = client.post("/v1/pubsub/push", json=envelope(), headers=bearer(SigningKey().sign()))
    assert (forged.status_code, forged.json()["error"]["code"]) == (401, "invalid_signature")
    garbage = client.post("/v1/pubsub/push", json=envelope(), headers=bearer("not-a-jwt"))
    assert (garbage.status_code, garbage.json()["error"]["code"]) == (401, "invalid_token")
    unsigned = client.post("/v1/pubsub/push", json=envelope())
    assert (unsigned.status_code, unsigned.json()["error"]["code"]) == (401, "unauthorized")
    assert unsigned.headers["www-authenticate"] == "Bearer"
    assert harness.tracker.primary.completions(RUN) == []


def test_an_unknown_key_id_refetches_the_certificates_once(
    harness_for: Any, certs: RecordingServer, google_key: SigningKey
) -> None:
    """After Google rotates its keys, a token with a new key id refreshes the cached certs."""
    harness = harness_for(push_pipeline(certs.url))
    client = TestClient(create_app(harness.runtime))
    assert (
        client.post(
            "/v1/pubsub/push", json=envelope(), headers=bearer(google_key.sign())
        ).status_code
        == 202
    )
    rotated = SigningKey()
    certs.default = (
        200,
        {"Content-Type": "application/json"},
        json.dumps({"rotated": rotated.certificate_pem}).encode(),
    )
    body = envelope({"phase": "extract", "run_key": RUN, "processor": "files"})
    response = client.post("/v1/pubsub/push", json=body, headers=bearer(rotated.sign("rotated")))
    assert response.status_code == 202, response.text
    assert len(certs.requests) == 2


def test_an_unreachable_certificate_endpoint_answers_503_so_pubsub_retries(
    harness_for: Any, certs: RecordingServer, google_key: SigningKey
) -> None:
    """When Google's keys cannot be fetched the push is not acknowledged (503)."""
    certs.default = (500, {}, b"oops")
    harness = harness_for(push_pipeline(certs.url, dead_letter=True))
    client = TestClient(create_app(harness.runtime))
    response = client.post("/v1/pubsub/push", json=envelope(), headers=bearer(google_key.sign()))
    assert (response.status_code, response.json()["error"]["code"]) == (503, "certs_unavailable")


def test_the_static_token_is_still_accepted_beside_oidc(
    harness_for: Any, certs: RecordingServer, google_key: SigningKey
) -> None:
    """With both configured, the static token (header or ?token=) and OIDC both work."""
    harness = harness_for(push_pipeline(certs.url, token=True))
    client = TestClient(create_app(harness.runtime))
    assert (
        client.post(
            "/v1/pubsub/push", json=envelope(), headers=bearer("static-s3cret-token")
        ).status_code
        == 202
    )
    files = envelope({"phase": "extract", "run_key": RUN, "processor": "files"})
    assert client.post("/v1/pubsub/push?token=static-s3cret-token", json=files).status_code == 202
    assert (
        client.post("/v1/pubsub/push", json=files, headers=bearer(google_key.sign())).status_code
        == 202
    )
    wrong = client.post("/v1/pubsub/push", json=files, headers=bearer("static-wrong-token"))
    assert wrong.status_code == 401


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"nope": 1}, "malformed_envelope"),
        (envelope(raw="%%%"), "malformed_envelope"),
        (envelope(raw=base64.b64encode(b"[1, 2]").decode()), "malformed_body"),
        (envelope({"phase": "extract", "run_key": RUN, "processor": "ghost"}), "unknown_processor"),
        (envelope({"phase": "extract", "run_key": "yesterday", "processor": "api"}), "bad_run_key"),
    ],
)
def test_malformed_messages_are_dead_lettered_when_configured(
    harness_for: Any,
    certs: RecordingServer,
    google_key: SigningKey,
    body: Any,
    code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """dead_letter = true: 200 (acknowledged), an ERROR log line and an alert event."""
    harness = harness_for(push_pipeline(certs.url, dead_letter=True))
    client = TestClient(create_app(harness.runtime))
    with caplog.at_level(logging.ERROR, logger="phasegate.pubsub"):
        response = client.post("/v1/pubsub/push", json=body, headers=bearer(google_key.sign()))
    assert response.status_code == 200
    assert response.json()["dead_lettered"] is True
    assert response.json()["error"]["code"] == code
    [event] = harness.events_of(EventKind.MESSAGE_DEAD_LETTERED)
    assert event.details["code"] == code
    assert any(
        r.levelno == logging.ERROR and "dead-lettered" in r.getMessage() for r in caplog.records
    )


def test_without_dead_lettering_malformed_messages_answer_4xx(
    harness_for: Any, certs: RecordingServer, google_key: SigningKey
) -> None:
    """dead_letter = false (the default): 400/422 as before, nothing dead-lettered."""
    harness = harness_for(push_pipeline(certs.url))
    client = TestClient(create_app(harness.runtime))
    bad = client.post("/v1/pubsub/push", json={"nope": 1}, headers=bearer(google_key.sign()))
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "message")
    ghost = envelope({"phase": "extract", "run_key": RUN, "processor": "ghost"})
    inner = client.post("/v1/pubsub/push", json=ghost, headers=bearer(google_key.sign()))
    assert (inner.status_code, inner.json()["error"]["field"]) == (422, "processor")
    assert harness.events_of(EventKind.MESSAGE_DEAD_LETTERED) == []


def test_a_store_outage_is_never_dead_lettered(
    harness_for: Any, certs: RecordingServer, google_key: SigningKey
) -> None:
    """Both stores down: 503, so Pub/Sub redelivers; the message is not acknowledged."""
    harness = harness_for(push_pipeline(certs.url, dead_letter=True))
    harness.primary_fault.fail()
    harness.backup_fault.fail()
    client = TestClient(create_app(harness.runtime))
    response = client.post("/v1/pubsub/push", json=envelope(), headers=bearer(google_key.sign()))
    assert response.status_code == 503
    assert harness.events_of(EventKind.MESSAGE_DEAD_LETTERED) == []


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (f'audience = "{AUDIENCE}"', "allowed_service_accounts: is required with audience"),
        (f'allowed_service_accounts = ["{PUSHER}"]', "audience: is required"),
        ('audience = "a"\nallowed_service_accounts = ["not-an-email"]', "service-account emails"),
        ("dead_letter = 1", "dead_letter: expected true or false"),
        ('certs_url = "ftp://x"', r"certs_url: expected an http\(s\) URL"),
        ("colour = 1", "unknown key"),
    ],
)
def test_the_pubsub_push_table_is_validated(table: str, message: str) -> None:
    """Each mistake in [server.pubsub_push] is a ConfigError naming the key."""
    from phasegate.config import loads_pipeline

    with pytest.raises(ConfigError, match=message):
        loads_pipeline(PIPELINE_TEXT + f"\n[server.pubsub_push]\n{table}\n")


def test_dead_letter_alone_needs_no_oidc() -> None:
    """``dead_letter = true`` without an audience keeps the static-token behaviour."""
    from phasegate.config import GOOGLE_CERTS_URL, loads_pipeline

    settings = loads_pipeline(
        PIPELINE_TEXT + "\n[server.pubsub_push]\ndead_letter = true\n"
    ).server.pubsub_push
    assert settings is not None
    assert (settings.audience, settings.dead_letter, settings.certs_url) == (
        None,
        True,
        GOOGLE_CERTS_URL,
    )
