"""The Cloud Functions entry point, driven by functions-framework with real CloudEvents: on
SQLite, and on the Firestore, BigQuery and Pub/Sub emulators."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient

from phasegate.config import load_pipeline
from phasegate.errors import BothStoresFailed
from phasegate.gcp.function import INSTANCE, handle_pubsub_event
from phasegate.model import trigger_id_for
from phasegate.stores import open_store
from phasegate.testing import FakeClock
from support import Harness

RUN = "2026-01-28"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gcp-function" / "main.py"
Converter = Callable[[CloudEvent], tuple[dict[str, str], bytes]]


def pipeline_file(tmp_path: Path, *, dead_letter: bool = False) -> Path:
    path = tmp_path / "phasegate.toml"
    path.write_text(
        f"""
[pipeline]
name = "orders"

[stores]
primary = "sqlite:///{tmp_path}/primary.db"
backup = "sqlite:///{tmp_path}/backup.db"

[triggers]
transport = "log:{tmp_path}/triggers.jsonl"

[server.pubsub_push]
dead_letter = {"true" if dead_letter else "false"}

[[phases]]
name = "phase2"
processors = ["raw_games", "raw_players"]
next = "phase3"

[[phases]]
name = "phase3"
processors = ["analytics"]
"""
    )
    return path


@pytest.fixture
def function_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., FlaskClient]]:
    """A functions-framework app serving examples/gcp-function/main.py's entry point."""

    def make(*, dead_letter: bool = False, phase: str | None = None) -> FlaskClient:
        monkeypatch.setenv(
            "PHASEGATE_CONFIG", str(pipeline_file(tmp_path, dead_letter=dead_letter))
        )
        if phase:
            monkeypatch.setenv("PHASEGATE_PHASE", phase)
        app = functions_framework.create_app(
            target="record_completion", source=str(EXAMPLE), signature_type="cloudevent"
        )
        return app.test_client()

    yield make
    INSTANCE.reset()


def pubsub_event(body: Any, *, raw: bytes | None = None, message_id: str = "m-1") -> CloudEvent:
    """A CloudEvent as Eventarc delivers a Pub/Sub message to a 2nd-gen function."""
    data = raw if raw is not None else json.dumps(body).encode()
    return CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": "//pubsub.googleapis.com/projects/my-project/topics/phase2-completions",
            "id": message_id,
            "specversion": "1.0",
        },
        {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": {"origin": "raw_games"},
                "messageId": message_id,
                "publishTime": "2026-01-28T06:00:00Z",
            },
            "subscription": "projects/my-project/subscriptions/eventarc-phase2",
        },
    )


def post(client: FlaskClient, event: CloudEvent, convert: Converter) -> Any:
    headers, body = convert(event)
    return client.post("/", headers=headers, data=body)


def recorded(tmp_path: Path) -> list[Any]:
    pipeline = load_pipeline(tmp_path / "phasegate.toml")
    store = open_store(pipeline.stores.primary, pipeline="orders", name="primary")
    try:
        return store.completions(RUN)
    finally:
        store.close()


@pytest.mark.parametrize("convert", [to_binary, to_structured], ids=["binary", "structured"])
def test_a_pubsub_cloudevent_records_the_completion_and_triggers_the_next_phase(
    function_client: Callable[..., FlaskClient], tmp_path: Path, convert: Converter
) -> None:
    """Two processors report through the function; the second claims and delivers phase 2."""
    client = function_client()
    first = post(
        client,
        pubsub_event({"phase": "phase2", "run_key": RUN, "processor": "raw_games"}),
        convert,
    )
    assert first.status_code == 200, first.text
    second = post(
        client,
        pubsub_event(
            {"phase": "phase2", "run_key": RUN, "processor": "raw_players"}, message_id="m-2"
        ),
        convert,
    )
    assert second.status_code == 200
    assert sorted(c.processor for c in recorded(tmp_path)) == ["raw_games", "raw_players"]
    assert {c.correlation_id for c in recorded(tmp_path)} == {"m-1", "m-2"}
    [trigger] = [
        json.loads(line) for line in (tmp_path / "triggers.jsonl").read_text().splitlines()
    ]
    assert (trigger["phase"], trigger["next_phase"], trigger["run_key"]) == (
        "phase2",
        "phase3",
        RUN,
    )


def test_a_redelivered_event_is_recorded_once_and_triggers_once(
    function_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    """Pub/Sub's at-least-once redelivery changes nothing: one record, one trigger."""
    client = function_client()
    for processor in ("raw_games", "raw_players", "raw_players"):
        event = pubsub_event({"phase": "phase2", "run_key": RUN, "processor": processor})
        assert post(client, event, to_binary).status_code == 200
    assert len(recorded(tmp_path)) == 2
    assert len((tmp_path / "triggers.jsonl").read_text().splitlines()) == 1


def test_the_phase_can_come_from_the_environment(
    function_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    """PHASEGATE_PHASE fills the phase, as one old per-phase topic's messages need."""
    client = function_client(phase="phase2")
    event = pubsub_event({"run_key": RUN, "processor": "raw_games", "status": "failed"})
    assert post(client, event, to_binary).status_code == 200
    [completion] = recorded(tmp_path)
    assert (completion.phase, completion.status.value) == ("phase2", "failed")


def test_a_malformed_message_fails_the_function_so_pubsub_retries(
    function_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    """Without dead-lettering a malformed message is an error (500): nothing is recorded."""
    client = function_client()
    response = post(client, pubsub_event(None, raw=b"not json"), to_binary)
    assert response.status_code == 500
    assert recorded(tmp_path) == []


@pytest.mark.parametrize(
    "event",
    [
        pubsub_event(None, raw=b"not json"),
        pubsub_event({"phase": "phase2", "run_key": "yesterday", "processor": "raw_games"}),
        pubsub_event({"phase": "phase2", "run_key": RUN, "processor": "ghost"}),
    ],
    ids=["not-json", "bad-run-key", "unknown-processor"],
)
def test_a_malformed_message_is_dead_lettered_when_configured(
    function_client: Callable[..., FlaskClient],
    tmp_path: Path,
    event: CloudEvent,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """dead_letter = true: acknowledged (200) with an ERROR dead-letter line; nothing recorded."""
    client = function_client(dead_letter=True)
    with caplog.at_level(logging.ERROR, logger="phasegate.pubsub"):
        response = post(client, event, to_binary)
    assert response.status_code == 200
    assert recorded(tmp_path) == []
    [line] = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert line.levelno == logging.ERROR
    assert "m-1" in line.getMessage()


def test_a_store_outage_raises_so_pubsub_retries(tmp_path: Path, clock: FakeClock) -> None:
    """Both stores down: handle_pubsub_event raises BothStoresFailed (the function fails)."""
    harness = Harness(tmp_path, clock)
    harness.primary_fault.fail()
    harness.backup_fault.fail()
    event = pubsub_event({"phase": "extract", "run_key": RUN, "processor": "api"})
    with pytest.raises(BothStoresFailed):
        handle_pubsub_event(harness.runtime, event.get_data())
    harness.primary_fault.heal()
    harness.backup_fault.heal()
    clock.advance(31)
    result = handle_pubsub_event(harness.runtime, event.get_data())
    assert result is not None
    assert result.recorded
    harness.runtime.close()


GCP_PIPELINE = """
[pipeline]
name = "orders"

[stores]
primary = "firestore://phasegate-test?prefix={tag}"
backup = "bigquery://phasegate-test/{tag}"

[triggers]
transport = "pubsub://{project}/{topic}"

[[phases]]
name = "phase2"
processors = ["raw_games", "raw_players"]
next = "phase3"

[[phases]]
name = "phase3"
processors = ["analytics"]
"""


@pytest.mark.timeout(600)
def test_the_function_on_the_emulators_records_in_firestore_and_bigquery_and_publishes_once(
    firestore_host: str,
    bigquery_host: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CloudEvents through functions-framework, Firestore + BigQuery + Pub/Sub emulators: both
    stores hold each report, a redelivery changes nothing, one trigger is published."""
    del firestore_host, bigquery_host
    from pubsub_emulator import PROJECT, shared_emulator

    emulator = shared_emulator()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    topic = emulator.create_topic()
    subscription = emulator.create_subscription(topic)
    tag = f"f{uuid.uuid4().hex[:12]}"
    path = tmp_path / "phasegate.toml"
    path.write_text(GCP_PIPELINE.format(tag=tag, project=PROJECT, topic=topic))
    monkeypatch.setenv("PHASEGATE_CONFIG", str(path))
    app = functions_framework.create_app(
        target="record_completion", source=str(EXAMPLE), signature_type="cloudevent"
    )
    client = app.test_client()
    try:
        for index, processor in enumerate(("raw_games", "raw_players", "raw_players")):
            event = pubsub_event(
                {"phase": "phase2", "run_key": RUN, "processor": processor},
                message_id=f"m-{index}",
            )
            response = post(client, event, to_binary)
            assert response.status_code == 200, response.text
    finally:
        INSTANCE.reset()
    for url in (f"firestore://phasegate-test?prefix={tag}", f"bigquery://phasegate-test/{tag}"):
        store = open_store(url, pipeline="orders", name="check")
        try:
            assert sorted(c.processor for c in store.completions(RUN)) == [
                "raw_games",
                "raw_players",
            ]
            [entry] = store.triggers(RUN)
            assert entry.delivered
        finally:
            store.close()
    messages = emulator.pull(subscription)
    assert [m.attributes["trigger_id"] for m in messages] == [
        trigger_id_for("orders", "phase2", RUN)
    ]
    assert json.loads(messages[0].data)["next_phase"] == "phase3"
