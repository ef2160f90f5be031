"""The HTTP API through the ASGI client: every status code the service promises."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from phasegate.config import Secret
from phasegate.events import EventKind
from phasegate.service import create_app
from phasegate.testing import FakeClock
from support import Harness

RUN = "2026-01-28"


@pytest.fixture
def client(harness: Harness) -> TestClient:
    return TestClient(create_app(harness.runtime))


def report(**overrides: Any) -> dict[str, Any]:
    return {"phase": "extract", "run_key": RUN, "processor": "api"} | overrides


def test_a_completion_is_recorded_with_202_and_completes_the_phase(client: TestClient) -> None:
    """202 with the documented fields; the last processor claims the trigger; duplicates too."""
    first = client.post("/v1/completions", json=report(metadata={"rows": 3}))
    assert first.status_code == 202
    assert first.json() | {"correlation_id": None} == {
        "recorded": True,
        "primary_ok": True,
        "backup_ok": True,
        "phase_complete": False,
        "trigger_id": None,
        "claimed": False,
        "deferred": False,
        "correlation_id": None,
    }
    last = client.post("/v1/completions", json=report(processor="files", correlation_id="c-1"))
    assert last.status_code == 202
    assert last.json()["claimed"] is True
    assert last.json()["correlation_id"] == "c-1"
    again = client.post("/v1/completions", json=report(processor="files"))
    assert again.status_code == 202
    assert again.json()["trigger_id"] == last.json()["trigger_id"]
    assert again.json()["claimed"] is False


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (report(phase="nope"), 422, "unknown_phase", "phase"),
        (report(processor="ghost"), 422, "unknown_processor", "processor"),
        (report(run_key="yesterday"), 422, "bad_run_key", "run_key"),
        (report(status="done"), 422, "invalid", "status"),
        (report(phase=12), 422, "wrong_type", "phase"),
        (report(metadata=[1]), 422, "wrong_type", "metadata"),
        (report(metadata={"x": "y" * 17000}), 422, "too_large", "metadata"),
        (report(colour="red"), 422, "unknown_field", "colour"),
        ({"phase": "extract", "run_key": RUN}, 422, "missing_field", "processor"),
        ([1, 2], 400, "malformed_body", None),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field(
    client: TestClient, body: Any, status: int, code: str, field: str | None
) -> None:
    """Each mistake answers the error shape with its code and field, and records nothing."""
    response = client.post("/v1/completions", json=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field
    assert response.json()["error"]["message"]
    assert client.get("/v1/runs").json()["runs"] == []


def test_malformed_json_and_oversized_bodies(client: TestClient) -> None:
    """Not JSON → 400; over 64 KiB → 413, both in the error shape."""
    response = client.post(
        "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "malformed_json")
    big = json.dumps(report(metadata={"x": "y" * 70000})).encode()
    response = client.post(
        "/v1/completions", content=big, headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "too_large")


def test_both_stores_down_answers_503_and_records_nothing(
    harness: Harness, client: TestClient
) -> None:
    """Nothing acknowledged: 503 with the error shape."""
    harness.primary_fault.fail()
    harness.backup_fault.fail()
    response = client.post("/v1/completions", json=report())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "stores_unavailable"
    assert client.get("/livez").status_code == 200
    harness.primary_fault.heal()
    harness.backup_fault.heal()
    assert harness.tracker.primary.completions(RUN) == []


def test_a_configured_token_guards_the_write_endpoints(harness: Harness) -> None:
    """401 without or with a wrong bearer token; 202 with it; reads need it too."""
    client = TestClient(create_app(harness.runtime, token=Secret("s3cret-token")))
    assert client.post("/v1/completions", json=report()).status_code == 401
    wrong = client.post("/v1/completions", json=report(), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"
    assert wrong.headers["www-authenticate"] == "Bearer"
    right = client.post(
        "/v1/completions", json=report(), headers={"Authorization": "Bearer s3cret-token"}
    )
    assert right.status_code == 202
    assert client.get("/v1/runs").status_code == 401
    assert (
        client.get("/v1/runs", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    )
    push = envelope(report(processor="files"))
    assert client.post("/v1/pubsub/push", json=push).status_code == 401
    assert client.post("/v1/pubsub/push?token=s3cret-token", json=push).status_code == 202


def envelope(body: Any, **message: Any) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(body).encode()).decode()
    return {
        "message": {"data": data, "messageId": "m-42", **message},
        "subscription": "projects/p/subscriptions/s",
    }


def test_pubsub_push_envelopes_record_the_same_way(client: TestClient) -> None:
    """The decoded body is recorded; messageId becomes the correlation id; bad envelopes 400."""
    response = client.post("/v1/pubsub/push", json=envelope(report()))
    assert response.status_code == 202
    assert response.json()["correlation_id"] == "m-42"
    tagged = client.post(
        "/v1/pubsub/push",
        json=envelope(report(processor="files"), attributes={"correlation_id": "c-9"}),
    )
    assert tagged.json()["correlation_id"] == "c-9"
    assert tagged.json()["claimed"] is True
    bad = client.post("/v1/pubsub/push", json={"message": {"data": "%%%"}})
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "message.data")
    assert client.post("/v1/pubsub/push", json={"nope": 1}).json()["error"]["field"] == "message"
    inner = client.post("/v1/pubsub/push", json=envelope(report(processor="ghost")))
    assert (inner.status_code, inner.json()["error"]["field"]) == (422, "processor")


def test_runs_are_listed_and_shown_per_phase(client: TestClient) -> None:
    """GET /v1/runs and /v1/runs/{key}: state, expected, succeeded, failed, missing, trigger."""
    client.post("/v1/completions", json=report())
    client.post("/v1/completions", json=report(processor="files"))
    client.post(
        "/v1/completions", json=report(phase="transform", processor="clean", status="failed")
    )
    [run] = client.get("/v1/runs?limit=5").json()["runs"]
    assert run["run_key"] == RUN
    extract, transform, load = client.get(f"/v1/runs/{RUN}").json()["phases"]
    assert extract["state"] == "triggered"
    assert set(extract["trigger"]) >= {"trigger_id", "reason", "claimed_at", "delivered_at"}
    assert (transform["state"], transform["failed"], transform["missing"]) == (
        "waiting",
        ["clean"],
        ["clean", "join"],
    )
    assert (load["state"], load["trigger"]) == ("not_started", None)
    assert client.get("/v1/runs/2026-02-02").status_code == 404
    assert client.get("/v1/runs/not-a-date").json()["error"]["field"] == "run_key"
    too_many = client.get("/v1/runs?limit=0")
    assert too_many.status_code == 422
    assert too_many.json()["error"] | {"message": ""} == {
        "code": "invalid",
        "field": "limit",
        "message": "",
    }


def test_health_caches_and_reports_a_failing_store(harness: Harness, client: TestClient) -> None:
    """200 healthy in SPEC shape; cached on the second call; 503 with the failing dependency."""
    first = client.get("/health")
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {
        "status",
        "service",
        "version",
        "uptime_seconds",
        "timestamp",
        "dependencies",
        "cached",
        "cache_age_seconds",
    }
    assert set(body["dependencies"]) == {"primary_store", "backup_store", "trigger_transport"}
    assert body["cached"] is False
    assert client.get("/health").json()["cached"] is True
    harness.primary_fault.fail()
    harness.clock.advance(31)
    degraded = client.get("/health")
    assert degraded.status_code == 503
    assert degraded.json()["status"] == "degraded"
    assert degraded.json()["dependencies"]["primary_store"]["healthy"] is False
    assert "fault injected" in degraded.json()["dependencies"]["primary_store"]["error"]


def test_metrics_expose_every_documented_family(client: TestClient) -> None:
    """Prometheus text carries every documented metric family."""
    client.post("/v1/completions", json=report())
    client.post("/v1/completions", json=report(processor="files"))
    client.get("/health")
    text = client.get("/metrics").text
    for name in [
        'phasegate_completions_total{outcome="recorded",phase="extract",status="success"} 2.0',
        'phasegate_store_writes_total{outcome="ok",store="primary"}',
        'phasegate_dual_writes_total{result="both"}',
        'phasegate_retries_total{store="backup"} 0.0',
        'phasegate_breaker_state{store="primary"} 0.0',
        "phasegate_breaker_trips_total",
        'phasegate_triggers_total{phase="extract",reason="complete"} 1.0',
        "phasegate_trigger_latency_seconds_bucket",
        "phasegate_outbox_backlog 1.0",
        'phasegate_alerts_total{outcome="sent"}',
        'phasegate_health_checks_total{dependency="primary_store"} 1.0',
    ]:
        assert name in text, name


def test_an_unexpected_error_answers_500_and_raises_a_critical_alert(harness: Harness) -> None:
    """A bug behind a route is a 500 in the error shape and a critical event with its stack."""
    client = TestClient(create_app(harness.runtime), raise_server_exceptions=False)

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("boom")

    harness.orchestrator.run_status = broken  # type: ignore[method-assign]
    response = client.get(f"/v1/runs/{RUN}")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"
    [event] = harness.events_of(EventKind.UNEXPECTED_ERROR)
    assert event.error is not None
    assert "boom" in event.message


def test_the_dashboard_shows_the_grid_and_escapes_everything(
    tmp_path: Path, clock: FakeClock
) -> None:
    """States as classes; a hostile run key is shown escaped; no external assets."""
    text = """
[pipeline]
name = "p"
run_key_pattern = '^.+$'

[[phases]]
name = "a"
processors = ["x"]
"""
    harness = Harness(tmp_path, clock, text)
    client = TestClient(create_app(harness.runtime))
    harness.complete("a", "x", "<script>alert(1)</script>")
    page = client.get("/")
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>" not in page.text
    assert 'data-state="triggered"' in page.text
    assert 'http-equiv="refresh"' in page.text
    assert "http://" not in page.text.split("<body>")[0]
    harness.runtime.close()


def test_openapi_describes_the_endpoints(client: TestClient) -> None:
    """The OpenAPI document lists every public route and the completion body."""
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/completions",
        "/v1/pubsub/push",
        "/v1/runs",
        "/v1/runs/{run_key}",
        "/health",
        "/livez",
        "/metrics",
    } <= set(spec["paths"])
    body = spec["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert set(body["required"]) == {"phase", "run_key", "processor"}
