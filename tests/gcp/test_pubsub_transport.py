"""The ``pubsub://`` trigger transport against Google's Pub/Sub emulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pubsub_emulator import PROJECT, PubSubEmulator, running_emulator, shared_emulator

from phasegate.dispatch import Dispatcher
from phasegate.errors import ConfigError, DeliveryError, TransientDeliveryError
from phasegate.model import Trigger, TriggerReason, trigger_id_for
from phasegate.testing import FakeClock
from phasegate.transports import BatchTriggerTransport, open_transport
from phasegate.transports.pubsub import PubSubTransport, parse_pubsub_url
from support import Harness

RUN = "2026-01-28"


@pytest.fixture
def emulator() -> PubSubEmulator:
    return shared_emulator()


@pytest.fixture
def topic(emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A fresh topic with one subscription; the client is pointed at the emulator."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    name = emulator.create_topic()
    return name, emulator.create_subscription(name)


def a_trigger(phase: str = "extract", run_key: str = RUN) -> Trigger:
    return Trigger(
        trigger_id=trigger_id_for("orders", phase, run_key),
        pipeline="orders",
        phase=phase,
        next_phase="transform",
        run_key=run_key,
        reason=TriggerReason.COMPLETE,
        triggered_at=datetime(2026, 1, 28, 12, tzinfo=UTC),
    )


def test_a_published_trigger_is_acknowledged_with_its_attributes(
    emulator: PubSubEmulator, topic: tuple[str, str]
) -> None:
    """deliver() returns after the ack; the message is the trigger JSON with its attributes."""
    name, subscription = topic
    transport = open_transport(f"pubsub://{PROJECT}/{name}")
    assert isinstance(transport, PubSubTransport)
    trigger = a_trigger()
    transport.deliver(trigger)
    transport.ping()
    transport.close()
    [message] = emulator.pull(subscription)
    assert json.loads(message.data) == json.loads(trigger.to_json())
    assert dict(message.attributes) == {
        "trigger_id": trigger.trigger_id,
        "pipeline": "orders",
        "phase": "extract",
        "run_key": RUN,
        "reason": "complete",
        "next_phase": "transform",
    }
    assert transport.describe() == f"pubsub://{PROJECT}/{name} (emulator {emulator.host})"


def test_pending_triggers_go_out_in_one_batch_and_are_marked_delivered(
    emulator: PubSubEmulator, topic: tuple[str, str], tmp_path: Path, clock: FakeClock
) -> None:
    """Several pending triggers reach the topic through deliver_many, each marked delivered."""
    name, subscription = topic
    transport = PubSubTransport(f"pubsub://{PROJECT}/{name}")
    batches: list[int] = []
    original = transport.deliver_many

    def counting(triggers: list[Trigger]) -> list[DeliveryError | None]:
        batches.append(len(triggers))
        return original(triggers)

    transport.deliver_many = counting  # type: ignore[method-assign]
    assert isinstance(transport, BatchTriggerTransport)
    harness = Harness(tmp_path, clock)
    harness.transport.failing = True  # claims pile up in the outbox
    for day in ("2026-01-26", "2026-01-27", "2026-01-28"):
        harness.complete("extract", "api", run_key=day)
        harness.complete("extract", "files", run_key=day)
    dispatcher = Dispatcher(harness.tracker, transport, clock=clock)
    report = dispatcher.run_once(include_deferred=True)
    assert len(report.delivered) == 3
    assert report.ok
    assert batches == [3]
    assert dispatcher.pending(include_deferred=True) == []
    received = emulator.pull(subscription)
    assert sorted(m.attributes["run_key"] for m in received) == [
        "2026-01-26",
        "2026-01-27",
        RUN,
    ]
    transport.close()
    harness.runtime.close()


def test_a_missing_topic_is_a_permanent_delivery_error(
    emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publishing to a topic that does not exist fails as a (non-transient) DeliveryError."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    transport = PubSubTransport(f"pubsub://{PROJECT}/no-such-topic", timeout=5)
    with pytest.raises(DeliveryError, match="NotFound") as raised:
        transport.deliver(a_trigger())
    assert not isinstance(raised.value, TransientDeliveryError)
    with pytest.raises(DeliveryError, match="NotFound"):
        transport.ping()
    transport.close()


def test_an_emulator_that_went_down_is_a_transient_delivery_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Publish works, the emulator is killed, then deliver and ping raise TransientDeliveryError."""
    with running_emulator() as private:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", private.host)
        name = private.create_topic()
        transport = PubSubTransport(f"pubsub://{PROJECT}/{name}", timeout=1.5)
        transport.deliver(a_trigger())
        private.stop()
        with pytest.raises(TransientDeliveryError, match="publish"):
            transport.deliver(a_trigger(run_key="2026-01-29"))
        with pytest.raises(TransientDeliveryError, match="get topic"):
            transport.ping()
        transport.close()


@pytest.mark.parametrize(
    "url",
    ["pubsub://", "pubsub://project", "pubsub://project/", "pubsub://p/a/b", "pubsub:/p/t"],
)
def test_a_bad_pubsub_url_names_the_expected_form(url: str) -> None:
    """A URL without a project and one topic is a ConfigError showing the expected form."""
    with pytest.raises(ConfigError, match="pubsub://PROJECT/TOPIC"):
        parse_pubsub_url(url)


@pytest.mark.parametrize("option", ["timeout=0", "timeout=abc", "colour=red"])
def test_bad_url_options_are_refused(option: str) -> None:
    """Only ``timeout`` (seconds, up to 600) is an option of the URL."""
    with pytest.raises(ConfigError, match=r"timeout|unknown option"):
        PubSubTransport(f"pubsub://p/t?{option}", publisher=object())


def test_a_missing_client_names_the_gcp_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without google-cloud-pubsub installed, pubsub:// says which extra to install."""
    import sys

    import google.cloud

    monkeypatch.delitem(sys.modules, "phasegate.transports.pubsub")
    monkeypatch.delattr(google.cloud, "pubsub_v1")
    monkeypatch.setitem(sys.modules, "google.cloud.pubsub_v1", None)
    with pytest.raises(ConfigError, match=r"pip install 'phasegate\[gcp\]'"):
        open_transport("pubsub://p/t")
