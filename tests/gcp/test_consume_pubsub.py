"""``phasegate consume``: pulled messages are acknowledged only after they are recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pubsub_emulator import PROJECT, PubSubEmulator, shared_emulator

from phasegate.consume import PubSubConsumer
from phasegate.errors import ConfigError
from phasegate.events import EventKind
from phasegate.testing import FakeClock
from support import Harness

RUN = "2026-01-28"


@pytest.fixture
def emulator() -> PubSubEmulator:
    return shared_emulator()


@pytest.fixture
def topic(emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    name = emulator.create_topic()
    return name, emulator.create_subscription(name)


@pytest.fixture
def harness(tmp_path: Path, clock: FakeClock) -> Iterator[Harness]:
    made = Harness(tmp_path, clock)
    yield made
    made.runtime.close()


def completion(processor: str, **extra: Any) -> bytes:
    return json.dumps({"phase": "extract", "run_key": RUN, "processor": processor} | extra).encode()


def consumer_for(harness: Harness, subscription: str, **options: Any) -> PubSubConsumer:
    return PubSubConsumer(
        harness.runtime, f"pubsub://{PROJECT}/{subscription}", pull_timeout=3, **options
    )


def nothing_left(consumer: PubSubConsumer) -> bool:
    """One short pull finds no message (none was left unacknowledged)."""
    consumer.pull_timeout = 1
    return consumer.run_once().received == 0


def test_messages_are_recorded_then_acknowledged(
    emulator: PubSubEmulator, topic: tuple[str, str], harness: Harness
) -> None:
    """Both completions are recorded, the phase triggers and is delivered, nothing comes back."""
    name, subscription = topic
    first = emulator.publish(name, completion("api"), correlation_id="c-1")
    emulator.publish(name, completion("files"))
    consumer = consumer_for(harness, subscription)
    report = consumer.run_once()
    if report.received < 2:  # the emulator may hand the two messages over in two pulls
        second = consumer.run_once()
        report = type(report)(
            report.recorded + second.recorded, triggered=report.triggered + second.triggered
        )
    assert len(report.recorded) == 2
    assert first in report.recorded
    assert len(report.triggered) == 1
    assert [t.trigger_id for t in harness.transport.delivered] == list(report.triggered)
    [api] = [c for c in harness.tracker.primary.completions(RUN) if c.processor == "api"]
    assert api.correlation_id == "c-1"
    assert nothing_left(consumer)
    consumer.close()


def test_a_store_outage_leaves_the_message_for_redelivery_and_it_is_recorded_once(
    emulator: PubSubEmulator, topic: tuple[str, str], harness: Harness, clock: FakeClock
) -> None:
    """Both stores down: not acknowledged; redelivered after they heal and recorded once."""
    name, subscription = topic
    message_id = emulator.publish(name, completion("api"))
    harness.primary_fault.fail()
    harness.backup_fault.fail()
    consumer = consumer_for(harness, subscription)
    failed = consumer.run_once()
    assert failed.redelivered == (message_id,)
    assert failed.recorded == ()
    harness.primary_fault.heal()
    harness.backup_fault.heal()
    clock.advance(31)  # past the breakers' re-check interval
    again = consumer.run_once()
    assert again.recorded == (message_id,)
    assert nothing_left(consumer)
    assert len(harness.tracker.primary.completions(RUN)) == 1
    assert len(harness.tracker.backup.completions(RUN)) == 1
    consumer.close()


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[1]", completion("ghost"), completion("api", colour="red")],
    ids=["not-json", "not-object", "unknown-processor", "unknown-field"],
)
def test_malformed_messages_are_dead_lettered_when_configured(
    emulator: PubSubEmulator, topic: tuple[str, str], harness: Harness, data: bytes
) -> None:
    """dead_letter on: acknowledged with an alert event; nothing recorded; never comes back."""
    name, subscription = topic
    message_id = emulator.publish(name, data)
    consumer = consumer_for(harness, subscription, dead_letter=True)
    assert consumer.run_once().dead_lettered == (message_id,)
    [event] = harness.events_of(EventKind.MESSAGE_DEAD_LETTERED)
    assert event.details["message_id"] == message_id
    assert nothing_left(consumer)
    assert harness.tracker.primary.completions(RUN) == []
    consumer.close()


def test_without_dead_lettering_a_malformed_message_is_redelivered(
    emulator: PubSubEmulator, topic: tuple[str, str], harness: Harness
) -> None:
    """dead_letter off: the message is handed back each time (for the subscription's DLQ)."""
    name, subscription = topic
    message_id = emulator.publish(name, b"not json")
    consumer = consumer_for(harness, subscription)
    assert consumer.run_once().redelivered == (message_id,)
    assert consumer.run_once().redelivered == (message_id,)
    assert harness.events_of(EventKind.MESSAGE_DEAD_LETTERED) == []
    consumer.close()


def test_a_message_without_a_phase_takes_the_default_phase(
    emulator: PubSubEmulator, topic: tuple[str, str], harness: Harness
) -> None:
    """``--phase`` fills the phase of bodies that name none (one old topic per phase)."""
    name, subscription = topic
    emulator.publish(name, json.dumps({"run_key": RUN, "processor": "api"}).encode())
    consumer = consumer_for(harness, subscription, default_phase="extract")
    assert len(consumer.run_once().recorded) == 1
    assert [c.phase for c in harness.tracker.primary.completions(RUN)] == ["extract"]
    consumer.close()


def test_an_unreachable_pubsub_is_reported_not_raised(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull against a dead endpoint returns a report with the error; the loop backs off."""
    from support import free_port

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    consumer = consumer_for(harness, "anything")
    consumer.pull_timeout = 1
    report = consumer.run_once()
    assert report.error is not None
    assert "pull" in report.error
    consumer.close()


@pytest.mark.parametrize("url", ["pubsub://p", "pubsub://p/s?x=1", "nats://p/s"])
def test_a_bad_subscription_url_is_refused(harness: Harness, url: str) -> None:
    """The subscription must be pubsub://PROJECT/SUBSCRIPTION."""
    with pytest.raises(ConfigError, match=r"pubsub://PROJECT/SUBSCRIPTION|no options"):
        PubSubConsumer(harness.runtime, url, subscriber=object())


@pytest.mark.slow
def test_the_consume_command_records_and_stops_cleanly_on_sigterm(
    emulator: PubSubEmulator, topic: tuple[str, str], tmp_path: Path
) -> None:
    """`phasegate consume` records a published completion, then exits 0 on SIGTERM."""
    name, subscription = topic
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

[[phases]]
name = "extract"
processors = ["api"]
"""
    )
    env = os.environ | {"PUBSUB_EMULATOR_HOST": emulator.host}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phasegate.cli",
            "consume",
            f"pubsub://{PROJECT}/{subscription}",
            "--config",
            str(config),
            "--format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        assert "consuming" in process.stderr.readline()
        emulator.publish(name, completion("api"))
        assert process.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(60)
        report = json.loads(line[0])
        assert len(report["recorded"]) == 1
        assert len(report["triggered"]) == 1
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
        assert process.returncode == 0
        assert "consumer stopped" in errors
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
    assert json.loads((tmp_path / "triggers.jsonl").read_text())["phase"] == "extract"


def test_consume_once_takes_dead_lettering_from_the_pipeline_file_unless_overridden(
    emulator: PubSubEmulator,
    topic: tuple[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`consume --once`: [server.pubsub_push] dead_letter applies; --no-dead-letter wins (exit 1)."""
    from phasegate.cli import main

    name, subscription = topic
    config = tmp_path / "phasegate.toml"
    config.write_text(
        f"""
[pipeline]
name = "orders"

[stores]
primary = "sqlite:///{tmp_path}/primary.db"
backup = "sqlite:///{tmp_path}/backup.db"

[server.pubsub_push]
dead_letter = true

[[phases]]
name = "extract"
processors = ["api"]
"""
    )
    url = f"pubsub://{PROJECT}/{subscription}"
    emulator.publish(name, b"not json")
    assert main(["consume", url, "--once", "--config", str(config)]) == 0
    assert "0 recorded, 1 dead-lettered" in capsys.readouterr().out
    emulator.publish(name, b"still not json")
    code = main(
        ["consume", url, "--once", "--no-dead-letter", "--config", str(config), "--format", "json"]
    )
    assert code == 1
    assert len(json.loads(capsys.readouterr().out)["redelivered"]) == 1
