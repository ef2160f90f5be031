"""Fuzzing the API from its own OpenAPI document: no 5xx, no crash, recorded data intact."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from phasegate.service import create_app
from phasegate.testing import FakeClock
from support import Harness

_state: dict[str, Any] = {}


def _app() -> Any:
    directory = Path(tempfile.mkdtemp(prefix="phasegate-fuzz-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    harness = Harness(directory, FakeClock())
    app = create_app(harness.runtime)
    client = TestClient(app)
    for processor in ("api", "files"):
        response = client.post(
            "/v1/completions",
            json={"phase": "extract", "run_key": "2026-01-28", "processor": processor},
        )
        assert response.status_code == 202
    _state["harness"] = harness
    _state["before"] = client.get("/v1/runs/2026-01-28").json()
    return app


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_never_get_a_5xx(case: Any) -> None:
    """Whatever the fuzzer sends, the answer is below 500 and recorded runs are unchanged."""
    response = case.call()
    assert response.status_code < 500, response.text
    harness: Harness = _state["harness"]
    extract = harness.orchestrator.phase_status("extract", "2026-01-28")
    before = _state["before"]["phases"][0]
    assert (extract.state.value, list(extract.succeeded)) == (before["state"], before["succeeded"])
    assert extract.trigger is not None
    assert extract.trigger.trigger.trigger_id == before["trigger"]["trigger_id"]
