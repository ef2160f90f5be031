"""Reads need the token too: runs, metrics and the dashboard; /livez and /health stay open."""

from __future__ import annotations

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from phasegate.config import Secret
from phasegate.service import create_app
from phasegate.service.auth import COOKIE_NAME, Auth
from support import Harness

MAIN, READ = "main-token-0123456789", "read-token-9876543210"
RUN = "2026-01-28"
READS = ["/v1/runs", f"/v1/runs/{RUN}", "/metrics", "/"]


@pytest.fixture
def client(harness: Harness) -> TestClient:
    harness.complete("extract", "api")
    return TestClient(
        create_app(harness.runtime, token=Secret(MAIN), read_token=Secret(READ)),
        follow_redirects=False,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (bearer("wrong-token-000000000"), 401),
        ({"Authorization": f"Basic {MAIN}"}, 401),
        (bearer(READ), 200),
        (bearer(MAIN), 200),
    ],
    ids=["no-token", "wrong-token", "not-bearer", "read-token", "main-token"],
)
def test_each_read_endpoint_needs_either_token(
    client: TestClient, path: str, headers: dict[str, str], status: int
) -> None:
    """No or a wrong token: 401; the read token or the main token: 200."""
    response = client.get(path, headers=headers)
    assert response.status_code == status
    if status == 401 and path != "/":
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/livez", "/health"])
def test_livez_and_health_stay_open_and_show_no_secret(client: TestClient, path: str) -> None:
    """Probes need no token, and their answers never contain one."""
    response = client.get(path)
    assert response.status_code == 200
    assert MAIN not in response.text
    assert READ not in response.text


def test_the_read_token_cannot_write(client: TestClient) -> None:
    """Only the main token records completions; the read token is refused with 401."""
    body = {"phase": "extract", "run_key": RUN, "processor": "files"}
    assert client.post("/v1/completions", json=body, headers=bearer(READ)).status_code == 401
    assert client.post("/v1/completions", json=body, headers=bearer(MAIN)).status_code == 202


def test_the_dashboard_asks_for_the_token_once_with_a_login_form(client: TestClient) -> None:
    """No token: a 401 login form; posting the token sets a strict, HttpOnly session cookie."""
    page = client.get("/")
    assert page.status_code == 401
    assert '<form method="post" action="login">' in page.text
    wrong = client.post("/login", data={"token": "nope"})
    assert wrong.status_code == 401
    assert "wrong token" in wrong.text
    assert COOKIE_NAME not in wrong.headers.get("set-cookie", "")
    signed_in = client.post("/login", data={"token": READ})
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/"
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
        assert attribute.lower() in cookie.lower()
    assert "secure" not in cookie.lower()
    assert READ not in cookie
    client.cookies.set(COOKIE_NAME, signed_in.cookies[COOKIE_NAME])
    for path in READS:
        assert client.get(path).status_code == 200, path


def test_a_token_in_the_url_is_moved_into_the_cookie_and_stripped(client: TestClient) -> None:
    """?token= on the first visit redirects to the same page without it, setting the cookie."""
    first = client.get(f"/?limit=5&token={MAIN}")
    assert first.status_code == 303
    assert first.headers["location"] == "/?limit=5"
    assert MAIN not in first.headers["location"]
    client.cookies.set(COOKIE_NAME, first.cookies[COOKIE_NAME])
    assert client.get("/?limit=5").status_code == 200
    assert client.get(f"/?token=wrong-{MAIN}").status_code == 401


def test_the_cookie_is_secure_over_https(harness: Harness) -> None:
    """Behind https the session cookie carries Secure."""
    client = TestClient(
        create_app(harness.runtime, token=Secret(MAIN)),
        base_url="https://phasegate.test",
        follow_redirects=False,
    )
    response = client.post("/login", data={"token": MAIN})
    assert response.status_code == 303
    assert "secure" in response.headers["set-cookie"].lower()


def test_a_forged_or_stale_cookie_is_refused(client: TestClient) -> None:
    """A cookie that is not derived from a configured token opens nothing."""
    client.cookies.set(COOKIE_NAME, "0" * 64)
    for path in READS:
        assert client.get(path).status_code == 401, path
    client.cookies.set(COOKIE_NAME, MAIN)
    assert client.get("/v1/runs").status_code == 401


def test_the_cookie_does_not_authorise_writes(client: TestClient) -> None:
    """The dashboard's session is for reading: a write still needs the bearer token."""
    signed_in = client.post("/login", data={"token": MAIN})
    client.cookies.set(COOKIE_NAME, signed_in.cookies[COOKIE_NAME])
    body = {"phase": "extract", "run_key": RUN, "processor": "files"}
    assert client.post("/v1/completions", json=body).status_code == 401


def test_without_a_token_everything_is_open(harness: Harness) -> None:
    """With no [server] token, reads and the dashboard need nothing (loopback use)."""
    harness.complete("extract", "api")
    client = TestClient(create_app(harness.runtime))
    for path in READS:
        assert client.get(path).status_code == 200, path


def test_routes_carry_token_checks_only_when_a_token_is_configured(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a token each write is checked; with none the routes are open and run no
    per-request check at all (and writes are accepted without a header)."""
    checked: list[str] = []
    original = Auth.require_write

    async def counting(self: Auth, request: Request) -> None:
        checked.append(request.url.path)
        await original(self, request)

    monkeypatch.setattr(Auth, "require_write", counting)
    report = {"phase": "extract", "run_key": RUN, "processor": "api"}
    guarded = TestClient(create_app(harness.runtime, token=Secret(MAIN)))
    assert guarded.post("/v1/completions", json=report).status_code == 401
    assert guarded.post("/v1/completions", json=report, headers=bearer(MAIN)).status_code == 202
    assert checked == ["/v1/completions", "/v1/completions"]
    checked.clear()
    open_app = TestClient(create_app(harness.runtime))
    assert open_app.post("/v1/completions", json=report).status_code == 202
    assert open_app.post("/v1/completions:batch", json={"completions": [report]}).is_success
    assert checked == []
