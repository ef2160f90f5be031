"""The processor's HTTP client against a real service on loopback, and a scripted one."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from phasegate.client import (
    Client,
    Report,
    RequestRejected,
    ServerError,
    ServerUnreachable,
)
from phasegate.config import Secret
from phasegate.resilience.retry import Jitter, RetryPolicy
from phasegate.service import create_app
from phasegate.testing import FakeClock
from support import Harness, RecordingServer, UvicornThread, free_port

RUN = "2026-01-28"
TOKEN = "s3cret-client-token"
POLICY = RetryPolicy(attempts=4, base=0.5, max_delay=8.0, jitter=Jitter.FULL)


class Sleeps:
    """An injected sleep that records what it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def service(harness: Harness) -> Iterator[str]:
    """The real FastAPI app of ``harness`` under uvicorn on a loopback port, with a token."""
    with UvicornThread(create_app(harness.runtime, token=Secret(TOKEN))) as server:
        yield server.url


def client_for(url: str, sleeps: Sleeps, token: str | None = TOKEN, **kwargs: Any) -> Client:
    return Client(
        url, token, policy=POLICY, sleep=sleeps, rng=random.Random(7), timeout=5.0, **kwargs
    )


def test_complete_records_and_reports_the_trigger_of_the_last_processor(service: str) -> None:
    """Two reports complete ``extract``; the second receipt names the claimed trigger."""
    sleeps = Sleeps()
    with client_for(service, sleeps) as client:
        first = client.complete("extract", RUN, "api", metadata={"rows": 3})
        last = client.complete("extract", RUN, "files", correlation_id="corr-files")
    assert (first.phase_complete, first.claimed, first.trigger_id) == (False, False, None)
    assert first.correlation_id is not None
    assert len(first.correlation_id) == 32
    assert (last.phase_complete, last.claimed, last.correlation_id) == (True, True, "corr-files")
    assert last.trigger_id is not None
    assert (last.primary_ok, last.backup_ok) == (True, True)
    assert sleeps.waits == []


def test_a_rejected_report_raises_at_once_with_the_servers_error(service: str) -> None:
    """422 is never retried; the exception carries the code, the field and the body."""
    sleeps = Sleeps()
    with client_for(service, sleeps) as client, pytest.raises(RequestRejected) as info:
        client.complete("extract", RUN, "ghost")
    error = info.value
    assert (error.status, error.code, error.field) == (422, "unknown_processor", "processor")
    assert "'ghost' is not expected in phase 'extract'" in error.message
    assert json.loads(error.body)["error"]["field"] == "processor"
    assert sleeps.waits == []


def test_a_wrong_token_is_a_401_and_the_token_never_shows(service: str) -> None:
    """401 is not retried; neither the client's repr nor the error reveals a token."""
    sleeps = Sleeps()
    client = client_for(service, sleeps, token="wrong-token-value")
    with client, pytest.raises(RequestRejected) as info:
        client.complete("extract", RUN, "api")
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    assert "wrong-token-value" not in repr(client) + str(info.value) + info.value.body
    assert sleeps.waits == []


def test_both_stores_down_is_retried_then_raised_as_a_server_error(
    service: str, harness: Harness
) -> None:
    """503 from the service is retried ``attempts`` times with jittered waits, then raised."""
    harness.primary_fault.fail()
    harness.backup_fault.fail()
    sleeps = Sleeps()
    with client_for(service, sleeps) as client, pytest.raises(ServerError) as info:
        client.complete("extract", RUN, "api")
    assert (info.value.status, info.value.code) == (503, "stores_unavailable")
    assert len(sleeps.waits) == POLICY.attempts - 1
    assert all(0 <= wait <= POLICY.max_delay for wait in sleeps.waits)


def test_retries_keep_one_correlation_id_and_honour_retry_after() -> None:
    """503 (Retry-After 7), a hang-up, 500, then 202: one id on every try; the wait ≥ 7 s."""
    recorded = json.dumps({"recorded": True, "claimed": False, "correlation_id": "x"}).encode()
    sleeps = Sleeps()
    with RecordingServer() as server:
        server.responses = [
            (503, {"Retry-After": "7", "Content-Type": "application/json"}, b"{}"),
            "close",
            (500, {}, b"boom"),
            (202, {"Content-Type": "application/json"}, recorded),
        ]
        with client_for(server.url, sleeps) as client:
            receipt = client.complete("extract", RUN, "api")
        bodies = [request.json() for request in server.requests]
    assert receipt.correlation_id == "x"
    assert len(bodies) == 4
    assert len({body["correlation_id"] for body in bodies}) == 1
    assert bodies[0]["correlation_id"]
    assert sleeps.waits[0] >= 7
    assert len(sleeps.waits) == 3
    assert all(request.headers["Authorization"] == f"Bearer {TOKEN}" for request in server.requests)


def test_retry_after_as_an_http_date_is_measured_from_the_clock() -> None:
    """``Retry-After: <date>`` 30 s ahead of the injected clock holds the retry 30 s."""
    date = "Wed, 28 Jan 2026 19:30:30 GMT"
    clock = FakeClock(start=datetime(2026, 1, 28, 19, 30, tzinfo=UTC))
    sleeps = Sleeps()
    with RecordingServer() as server:
        server.responses = [
            (503, {"Retry-After": date}, b""),
            (202, {"Content-Type": "application/json"}, b"{}"),
        ]
        with client_for(server.url, sleeps, clock=clock) as client:
            client.complete("extract", RUN, "api")
    assert sleeps.waits[0] == pytest.approx(30, abs=POLICY.base)


def test_a_server_that_is_not_there_raises_unreachable_after_every_attempt() -> None:
    """Connection refused on every attempt: retried, then ServerUnreachable with the cause."""
    sleeps = Sleeps()
    with (
        client_for(f"http://127.0.0.1:{free_port()}", sleeps) as client,
        pytest.raises(ServerUnreachable) as info,
    ):
        client.complete("extract", RUN, "api")
    assert "ConnectError" in str(info.value)
    assert info.value.__cause__ is not None
    assert len(sleeps.waits) == POLICY.attempts - 1


class PathRecorder(httpx.HTTPTransport):
    """A real transport that notes the path of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


def test_complete_many_sends_one_batch_and_keeps_going_past_a_rejection(
    service: str, harness: Harness
) -> None:
    """The service has ``:batch``: one request; a bad report is answered in its place."""
    reports = [
        Report("extract", RUN, "api"),
        {"phase": "extract", "run_key": "yesterday", "processor": "files"},
        Report("extract", RUN, "files", correlation_id="corr-3"),
    ]
    transport = PathRecorder()
    with client_for(service, Sleeps(), transport=transport) as client:
        results = client.complete_many(reports)
    assert transport.paths == ["/v1/completions:batch"]
    assert [r.index for r in results] == [0, 1, 2]
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error is not None
    assert (results[1].error.field, results[1].error.code) == ("run_key", "bad_run_key")
    first, last = results[0].receipt, results[2].receipt
    assert first is not None
    assert last is not None
    assert (first.claimed, last.phase_complete, last.correlation_id) == (True, True, "corr-3")
    assert first.trigger_id == last.trigger_id
    assert len(harness.tracker.triggers(RUN)) == 1


def test_complete_many_asks_for_the_batch_endpoint_only_once() -> None:
    """A 404 on ``:batch`` switches the client to single reports for the rest of its life."""
    single = (202, {"Content-Type": "application/json"}, b'{"recorded": true}')
    with RecordingServer() as server:
        server.responses = [(404, {}, b'{"detail": "Not Found"}'), single, single, single, single]
        with client_for(server.url, Sleeps(), batch_size=1) as client:
            client.complete_many([Report("extract", RUN, "api")] * 2)
            client.complete_many([Report("extract", RUN, "files")])
        paths = [request.path for request in server.requests]
    assert paths == [
        "/v1/completions:batch",
        "/v1/completions",
        "/v1/completions",
        "/v1/completions",
    ]


def test_reports_with_unknown_fields_are_refused_before_sending() -> None:
    """A typo in a report mapping is a TypeError naming the field; nothing is sent."""
    with RecordingServer() as server:
        with client_for(server.url, Sleeps()) as client, pytest.raises(TypeError) as info:
            client.complete_many([{"phase": "p", "run_key": RUN, "processr": "x"}])
        assert server.requests == []
    assert "processr" in str(info.value)
