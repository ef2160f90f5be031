"""The completion routes answered ahead of FastAPI (service/fast.py) answer exactly as the
FastAPI routes they stand in for."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from phasegate.config import Secret
from phasegate.events import EventKind
from phasegate.service import create_app
from phasegate.service.fast import PhasegateApp
from support import Harness

MAIN = "main-token-0123456789"
JSON = {"content-type": "application/json"}


def report(run_key: str, **overrides: Any) -> dict[str, Any]:
    return {"phase": "extract", "run_key": run_key, "processor": "api"} | overrides


def answers(client: TestClient, run_key: str) -> list[tuple[int, Any]]:
    """Every kind of answer the two routes give, as (status, body without ids)."""
    big = json.dumps(report(run_key, metadata={"x": "y" * 70000})).encode()
    batch = {"completions": [report(run_key, processor="files"), report(run_key, phase=3)]}
    requests: list[tuple[str, dict[str, Any]]] = [
        ("/v1/completions", {"json": report(run_key)}),
        ("/v1/completions", {"json": report(run_key, processor="nobody")}),
        ("/v1/completions", {"json": report("not a date")}),
        ("/v1/completions", {"json": [1, 2]}),
        ("/v1/completions", {"content": b"{not json", "headers": JSON}),
        ("/v1/completions", {"content": big, "headers": JSON}),
        ("/v1/completions", {"json": report(run_key), "headers": {"authorization": "Bearer x"}}),
        ("/v1/completions:batch", {"json": batch}),
        ("/v1/completions:batch", {"json": {"completions": 1}}),
        ("/v1/completions:batch", {"json": {"completions": [{}] * 1001}}),
    ]
    found = []
    for path, arguments in requests:
        headers = {"authorization": f"Bearer {MAIN}", **arguments.pop("headers", {})}
        response = client.post(path, headers=headers, **arguments)
        found.append((response.status_code, _without_ids(response.json()), response.headers))
    return [(status, body) for status, body, _ in found] + [
        ("content-type", found[0][2]["content-type"])
    ]


def _without_ids(body: Any) -> Any:
    if isinstance(body, dict):
        return {
            k: "*" if k in {"correlation_id", "trigger_id"} else _without_ids(v)
            for k, v in body.items()
        }
    if isinstance(body, list):
        return [_without_ids(v) for v in body]
    return body


def test_the_fast_routes_answer_as_the_fastapi_routes_do(harness: Harness) -> None:
    """Success, every validation error, bad JSON, an oversized body, a wrong token and a
    batch: the same status and body, ahead of FastAPI or through it."""
    fast = create_app(harness.runtime, token=Secret(MAIN))
    slow = create_app(harness.runtime, token=Secret(MAIN))
    assert isinstance(slow, PhasegateApp)
    slow.fast = None
    fast_answers = answers(TestClient(fast), "2026-01-01")
    slow_answers = answers(TestClient(slow), "2026-01-01".replace("01-01", "01-02"))
    assert [status for status, _ in fast_answers[:7]] == [202, 422, 422, 400, 400, 413, 401]
    assert [s for s, _ in fast_answers[7:-1]] == [200, 400, 413]
    expected = [
        (status, json.loads(json.dumps(body).replace("2026-01-02", "2026-01-01")))
        for status, body in slow_answers
    ]
    assert fast_answers == expected
    assert fast_answers[-1] == ("content-type", "application/json")


def test_the_fast_route_is_the_one_that_answers(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the fast routes set, FastAPI's own completion route is never entered."""
    from phasegate.service.routes import completions

    def framework_route(*_args: Any) -> Any:
        raise AssertionError("the FastAPI route answered")

    monkeypatch.setattr(completions, "record", framework_route)
    monkeypatch.setattr(completions, "record_batch", framework_route)
    client = TestClient(create_app(harness.runtime))
    assert client.post("/v1/completions", json=report("2026-01-01")).status_code == 202
    batch = {"completions": [report("2026-01-01", processor="files")]}
    assert client.post("/v1/completions:batch", json=batch).status_code == 200
    assert [run["run_key"] for run in client.get("/v1/runs").json()["runs"]] == ["2026-01-01"]


def test_a_bug_behind_a_fast_route_answers_500_alerts_and_reaches_the_server(
    harness: Harness,
) -> None:
    """As Starlette's outermost middleware does: the error shape, a critical event, and the
    exception raised on to the server, which logs it."""

    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("boom")

    harness.orchestrator.arecord = broken  # type: ignore[method-assign]
    app = create_app(harness.runtime)
    response = TestClient(app, raise_server_exceptions=False).post(
        "/v1/completions", json=report("2026-01-01")
    )
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"
    [event] = harness.events_of(EventKind.UNEXPECTED_ERROR)
    assert "boom" in event.message
    with pytest.raises(RuntimeError, match="boom"):
        TestClient(app).post("/v1/completions", json=report("2026-01-01"))


def test_a_streamed_body_is_read_whole_and_a_client_gone_is_not_answered(
    harness: Harness,
) -> None:
    """A body in several chunks is one report; a client that disconnects before its body
    ends gets no answer and nothing is recorded."""
    app = create_app(harness.runtime)
    body = json.dumps(report("2026-01-01")).encode()

    def call(messages: list[Message], path: str = "/v1/completions") -> list[Message]:
        sent: list[Message] = []

        async def receive() -> Message:
            return messages.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "root_path": "",
            "headers": [(b"content-type", b"application/json")],
            "query_string": b"",
        }
        asyncio.run(app(scope, receive, send))
        return sent

    chunks = [body[:10], body[10:]]
    sent = call(
        [
            {"type": "http.request", "body": chunks[0], "more_body": True},
            {"type": "http.request", "body": chunks[1], "more_body": False},
        ]
    )
    assert sent[0]["status"] == 202
    assert json.loads(sent[1]["body"])["recorded"] is True
    gone = call(
        [
            {"type": "http.request", "body": b'{"phase": "ex', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    assert gone == []
    assert harness.tracker.primary.completions("2026-01-01") != []
    assert len(harness.tracker.primary.completions("2026-01-01")) == 1


def test_a_root_path_prefix_still_reaches_the_fast_route(harness: Harness) -> None:
    """Behind a proxy that mounts the service under a prefix (uvicorn ``--root-path``)."""
    client = TestClient(create_app(harness.runtime), root_path="/phasegate")
    response = client.post("/phasegate/v1/completions", json=report("2026-01-01"))
    assert response.status_code == 202, response.text
