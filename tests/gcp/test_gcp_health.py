"""Health and metrics name the Google Cloud dependencies and count their writes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pubsub_emulator import PROJECT, shared_emulator

from phasegate.cli import main
from phasegate.config import loads_pipeline
from phasegate.health import describe_dependency
from phasegate.runtime import Runtime, open_runtime
from phasegate.service.app import create_app
from phasegate.stores import open_store
from support import UvicornThread

# Emulators (the Pub/Sub one starts on first use) on a shared, loaded machine.
pytestmark = pytest.mark.timeout(900)

PIPELINE_TOML = """
[pipeline]
name = "health"

[stores]
primary = "firestore://phasegate-test?prefix={tag}"
backup = "bigquery://phasegate-test/{tag}"

[triggers]
transport = "pubsub://{project}/{topic}"

[server]
health_timeout = "60s"    # bqemulator answers in seconds on a loaded machine

[[phases]]
name = "phase2"
processors = ["games", "players"]
next = "phase3"

[[phases]]
name = "phase3"
processors = ["analytics"]
"""


@pytest.fixture
def gcp_runtime(
    firestore_host: str, bigquery_host: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Runtime]:
    """A runtime on the Firestore, BigQuery and Pub/Sub emulators."""
    del firestore_host, bigquery_host
    emulator = shared_emulator()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    topic = emulator.create_topic()
    tag = f"h{uuid.uuid4().hex[:12]}"
    pipeline = loads_pipeline(PIPELINE_TOML.format(tag=tag, project=PROJECT, topic=topic))
    runtime = open_runtime(pipeline)  # the system clock: latencies are real measurements
    yield runtime
    runtime.close()


def test_health_names_firestore_bigquery_and_pubsub_with_their_latency(
    gcp_runtime: Runtime,
) -> None:
    """/health: each dependency healthy, with its kind, where it is, and a latency."""
    client = TestClient(create_app(gcp_runtime))
    response = client.get("/health")
    assert response.status_code == 200, response.text
    dependencies = response.json()["dependencies"]
    prefix = gcp_runtime.tracker.primary.location.prefix
    dataset = gcp_runtime.tracker.backup.location.dataset
    assert {name: (d["kind"], d["description"]) for name, d in dependencies.items()} == {
        "primary_store": ("firestore", f"firestore://phasegate-test (prefix {prefix})"),
        "backup_store": ("bigquery", f"bigquery://phasegate-test/{dataset}"),
        "trigger_transport": (
            "pubsub",
            f"pubsub://{PROJECT}/{gcp_runtime.transport.topic}"  # type: ignore[attr-defined]
            f" (emulator {shared_emulator().host})",
        ),
    }
    assert {
        name: (d["healthy"], d.get("error")) for name, d in dependencies.items()
    } == dict.fromkeys(dependencies, (True, None))
    assert all(d["latency_ms"] > 0 for d in dependencies.values())


def test_the_health_command_prints_each_google_dependency(
    gcp_runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """`phasegate health` lists Firestore, BigQuery and Pub/Sub, each ok, with where it is."""
    with UvicornThread(create_app(gcp_runtime)) as server:
        assert main(["health", "--url", server.url, "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("healthy (200)")
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "ok" in lines["primary_store"]
    assert "firestore://phasegate-test" in lines["primary_store"]
    assert "ok" in lines["backup_store"]
    assert "bigquery://phasegate-test/" in lines["backup_store"]
    assert "pubsub://" in lines["trigger_transport"]


def test_metrics_count_firestore_and_bigquery_writes_like_the_sql_stores(
    gcp_runtime: Runtime,
) -> None:
    """/metrics: a batch and a claim count as writes of each role, and as dual writes."""
    gcp_runtime.record("phase2", "2026-05-01", "games")
    gcp_runtime.record("phase2", "2026-05-01", "players")
    client = TestClient(create_app(gcp_runtime))
    text = client.get("/metrics").text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    counts = gcp_runtime.tracker.counts()
    for role in ("primary", "backup"):
        key = f'phasegate_store_writes_total{{outcome="ok",store="{role}"}}'
        assert samples[key] == counts[f"writes.{role}.ok"] >= 3
    assert samples['phasegate_dual_writes_total{result="both"}'] >= 2


def test_describing_a_dependency_never_shows_credentials() -> None:
    """A SQL store's password and query string stay out of its description."""
    store = open_store(
        "postgresql://user:s3cret@127.0.0.1:5432/test?sslmode=disable",
        pipeline="health",
        name="primary",
    )
    try:
        assert describe_dependency(store) == ("postgresql", "postgresql://127.0.0.1:5432/test")
    finally:
        store.close()
