"""The service as Cloud Run runs it: `phasegate serve` on $PORT, receiving an OIDC-signed
Pub/Sub push over real HTTP; and the shipped Google Cloud example file."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from test_push_oidc import AUDIENCE, KID, PUSHER, SigningKey

from phasegate.config import load_pipeline
from phasegate.drift import load_drift
from support import RecordingServer, free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_google_cloud_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/gcp.toml: Firestore primary, BigQuery backup, Pub/Sub triggers, OIDC push, drift."""
    monkeypatch.setenv("PHASEGATE_TOKEN", "t" * 32)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/x")
    pipeline = load_pipeline(EXAMPLES / "gcp.toml")
    assert pipeline.stores.primary.startswith("firestore://")
    assert pipeline.stores.backup.startswith("bigquery://")
    assert pipeline.triggers.transport.startswith("pubsub://")
    assert pipeline.server.pubsub_push is not None
    assert pipeline.server.pubsub_push.dead_letter is True
    assert [p.name for p in pipeline.phases] == ["phase2", "phase3", "phase4", "phase5", "phase6"]
    drift = load_drift(EXAMPLES / "gcp.toml")
    assert drift.issue_label == "cloud-function-drift"
    assert {s.provider for s in drift.services} == {None, "cloud-run"}
    assert all(s.deploy for s in drift.services)


@pytest.mark.slow
def test_serve_listens_on_port_and_records_an_oidc_push(tmp_path: Path) -> None:
    """With PORT set (as Cloud Run does), the service answers there and accepts a signed push."""
    key = SigningKey()
    certs = RecordingServer(
        default=(
            200,
            {"Content-Type": "application/json"},
            json.dumps({KID: key.certificate_pem}).encode(),
        )
    )
    port = free_port()
    config = tmp_path / "phasegate.toml"
    config.write_text(
        f"""
[pipeline]
name = "orders"

[stores]
primary = "sqlite:///{tmp_path}/primary.db"
backup = "sqlite:///{tmp_path}/backup.db"

[triggers]
transport = "log:{tmp_path}/triggers.jsonl"

[server]
token = "env:PHASEGATE_TOKEN"

[server.pubsub_push]
audience = "{AUDIENCE}"
allowed_service_accounts = ["{PUSHER}"]
certs_url = "{{certs}}"

[[phases]]
name = "extract"
processors = ["api"]
"""
    )
    with certs:
        config.write_text(config.read_text().replace("{certs}", certs.url))
        env = os.environ | {
            "PORT": str(port),
            "PHASEGATE_CONFIG": str(config),
            "PHASEGATE_TOKEN": "s" * 32,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "phasegate.cli", "serve", "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            waiter = threading.Event()
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    waiter.wait(0.1)  # a real process starting up
            data = base64.b64encode(
                json.dumps(
                    {"phase": "extract", "run_key": "2026-01-28", "processor": "api"}
                ).encode()
            ).decode()
            response = httpx.post(
                f"{base}/v1/pubsub/push",
                json={"message": {"data": data, "messageId": "9"}, "subscription": "s"},
                headers={"Authorization": f"Bearer {key.sign()}"},
                timeout=30,
            )
            assert response.status_code == 202, response.text
            assert response.json()["claimed"] is True
            process.send_signal(signal.SIGTERM)
            _, errors = process.communicate(timeout=60)
            assert process.returncode == 0, errors
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
    [trigger] = (tmp_path / "triggers.jsonl").read_text().splitlines()
    assert json.loads(trigger)["phase"] == "extract"
