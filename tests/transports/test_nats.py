"""The NATS JetStream transport, against the machine's NATS server (and a private one)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from phasegate.errors import ConfigError, DeliveryError, TransientDeliveryError
from phasegate.model import Trigger, TriggerReason, trigger_id_for
from phasegate.transports import open_transport
from support import free_port, reachable, require_server, unavailable

nats = pytest.importorskip("nats", reason="the nats extra is not installed")
from phasegate.transports.nats import NatsSettings, NatsTransport, subject_matches  # noqa: E402

NATS_HOST, NATS_PORT = "127.0.0.1", 4222
NATS_URL = f"nats://{NATS_HOST}:{NATS_PORT}"


def trigger(run_key: str = "2026-01-28", phase: str = "extract") -> Trigger:
    return Trigger(
        trigger_id=trigger_id_for("orders", phase, run_key),
        pipeline="orders",
        phase=phase,
        next_phase="transform",
        run_key=run_key,
        reason=TriggerReason.COMPLETE,
        triggered_at=datetime(2026, 1, 28, 7, 12, tzinfo=UTC),
        processors=("api", "files"),
    )


def inspect(server: str, action: Callable[[Any], Any]) -> Any:
    """Run ``action(jetstream)`` on a fresh connection of the test's own."""

    async def run() -> Any:
        nc = await nats.connect(server, allow_reconnect=False, max_reconnect_attempts=1)
        try:
            return await action(nc.jetstream(timeout=5))
        finally:
            await nc.close()

    return asyncio.run(run())


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """A unique (subject, stream) for one test; the stream is deleted afterwards."""
    require_server("NATS", NATS_HOST, NATS_PORT)
    token = uuid.uuid4().hex[:10]
    subject, stream = f"phasegate.test.{token}", f"PGTEST_{token}"
    yield subject, stream

    async def delete(js: Any) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)

    inspect(NATS_URL, delete)


@pytest.fixture
def transport(names: tuple[str, str]) -> Iterator[NatsTransport]:
    subject, stream = names
    opened = open_transport(f"{NATS_URL}/{subject}?stream={stream}&duplicate_window=10m")
    assert isinstance(opened, NatsTransport)
    yield opened
    opened.close()


def test_a_trigger_delivered_twice_is_held_once_by_the_stream(
    transport: NatsTransport, names: tuple[str, str]
) -> None:
    """Two deliveries of one trigger (and one of another) leave two messages; consuming gets each once."""
    subject, stream = names
    first, second = trigger("2026-01-28"), trigger("2026-01-29")
    transport.deliver(first)
    transport.deliver(first)  # a redelivery after a crash: the duplicate ack counts as delivered
    transport.deliver(second)

    async def consume(js: Any) -> tuple[int, list[Any], int]:
        info = await js.stream_info(stream)
        sub = await js.pull_subscribe(subject, stream=stream)
        messages = await sub.fetch(2, timeout=5)
        for message in messages:
            await message.ack()
        pending = (await sub.consumer_info()).num_pending
        await sub.unsubscribe()
        return info.state.messages, messages, pending

    stored, messages, pending = inspect(NATS_URL, consume)
    assert stored == 2
    assert pending == 0
    assert [json.loads(m.data) for m in messages] == [first.to_message(), second.to_message()]
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [first.trigger_id, second.trigger_id]


def test_the_message_body_is_the_trigger_json_and_headers_carry_its_id(
    transport: NatsTransport, names: tuple[str, str]
) -> None:
    """The stored message is the trigger's JSON, with Nats-Msg-Id = trigger id."""
    _subject, stream = names
    sent = trigger()
    transport.deliver(sent)
    message = inspect(NATS_URL, lambda js: js.get_msg(stream, 1))
    assert message.data.decode() == sent.to_json()
    assert Trigger.from_message(json.loads(message.data)) == sent
    assert message.headers["Nats-Msg-Id"] == sent.trigger_id
    assert message.headers["Content-Type"] == "application/json"


def test_a_missing_stream_is_created_with_the_configured_duplicate_window(
    transport: NatsTransport, names: tuple[str, str]
) -> None:
    """ping() creates the stream, capturing the subject, with a 10-minute duplicate window."""
    subject, stream = names
    transport.ping()
    info = inspect(NATS_URL, lambda js: js.stream_info(stream))
    assert info.config.subjects == [subject]
    assert info.config.duplicate_window == 600.0


def test_an_existing_stream_is_used_as_it_is(names: tuple[str, str]) -> None:
    """A stream made beforehand (wildcard subject, 30 s window) is published to, not changed."""
    subject, stream = names
    prefix = subject.rsplit(".", 1)[0]
    inspect(
        NATS_URL,
        lambda js: js.add_stream(name=stream, subjects=[f"{prefix}.>"], duplicate_window=30),
    )
    transport = NatsTransport(f"{NATS_URL}/{subject}?stream={stream}&duplicate_window=5m")
    try:
        transport.deliver(trigger())
        transport.deliver(trigger())
    finally:
        transport.close()
    info = inspect(NATS_URL, lambda js: js.stream_info(stream))
    assert info.config.subjects == [f"{prefix}.>"]
    assert info.config.duplicate_window == 30.0
    assert info.state.messages == 1


def test_a_stream_that_does_not_capture_the_subject_is_a_permanent_error(
    names: tuple[str, str],
) -> None:
    """An existing stream on other subjects gives a DeliveryError naming both, not a retry."""
    subject, stream = names
    inspect(NATS_URL, lambda js: js.add_stream(name=stream, subjects=[f"{subject}.other"]))
    transport = NatsTransport(f"{NATS_URL}/{subject}?stream={stream}")
    try:
        with pytest.raises(DeliveryError, match="does not capture subject") as caught:
            transport.deliver(trigger())
    finally:
        transport.close()
    assert not isinstance(caught.value, TransientDeliveryError)
    assert stream in str(caught.value)


def test_a_server_that_is_not_there_is_a_quick_transient_error() -> None:
    """Nothing listening: TransientDeliveryError from deliver and ping in well under a second each."""
    port = free_port()
    transport = NatsTransport(f"nats://127.0.0.1:{port}/phasegate.triggers?timeout=2s")
    try:
        started = time.perf_counter()
        with pytest.raises(TransientDeliveryError, match=f"127.0.0.1:{port}"):
            transport.deliver(trigger())
        with pytest.raises(TransientDeliveryError):
            transport.ping()
        elapsed = time.perf_counter() - started
    finally:
        transport.close()
    assert elapsed < 2.0


def test_close_stops_the_event_loop_thread(transport: NatsTransport) -> None:
    """After close() the transport's thread is gone and further use is refused."""
    transport.deliver(trigger())
    transport.close()
    assert not [t for t in threading.enumerate() if t.name == "phasegate-nats" and t.is_alive()]
    with pytest.raises(DeliveryError, match="closed"):
        transport.deliver(trigger())
    transport.close()


class PrivateNats:
    """A nats-server with JetStream of this test's own, on a free port, restartable."""

    def __init__(self, tmp_path: Path) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(binary).exists():
            unavailable("nats-server is not installed (its private instances restart it)")
        self.binary, self.port, self.store = binary, free_port(), tmp_path / "js"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", self.port):
            assert time.monotonic() < deadline, "private nats-server did not start"
            threading.Event().wait(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def test_the_transport_connects_again_after_the_server_drops(tmp_path: Path) -> None:
    """Server killed: a transient error; server back: the next delivery goes through, still once."""
    server = PrivateNats(tmp_path)
    server.start()
    transport = NatsTransport(f"nats://127.0.0.1:{server.port}/pipeline.triggers?timeout=2s")
    try:
        transport.deliver(trigger("2026-01-28"))
        server.stop()
        with pytest.raises(TransientDeliveryError):
            transport.deliver(trigger("2026-01-29"))
        server.start()
        transport.deliver(trigger("2026-01-29"))
        transport.deliver(trigger("2026-01-28"))  # a redelivery: kept once
        transport.ping()
        info = inspect(
            f"nats://127.0.0.1:{server.port}", lambda js: js.stream_info("PIPELINE_TRIGGERS")
        )
    finally:
        transport.close()
        server.stop()
    assert info.state.messages == 2


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "nats://127.0.0.1/orders.triggers",
            NatsSettings("nats://127.0.0.1:4222", "orders.triggers", "ORDERS_TRIGGERS"),
        ),
        (
            "nats://u:p@nats.internal:4333/t?stream=S-1&duplicate_window=1h&timeout=500ms",
            NatsSettings(
                "nats://u:p@nats.internal:4333",
                "t",
                "S-1",
                timedelta(hours=1),
                timedelta(milliseconds=500),
            ),
        ),
    ],
)
def test_the_url_names_server_subject_stream_and_windows(url: str, expected: NatsSettings) -> None:
    """Defaults: port 4222, the stream named after the subject, a 2-minute window, 5 s timeout."""
    assert NatsSettings.from_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nats://127.0.0.1:4222/", "is not a NATS subject"),
        ("nats://127.0.0.1:4222/a.*", "is not a NATS subject"),
        ("nats://127.0.0.1:4222/a?stream=bad.name", "stream name"),
        ("nats://127.0.0.1:4222/a?duplicate_window=soon", "duplicate_window"),
        ("nats://127.0.0.1:4222/a?durable=x", "unknown option"),
    ],
)
def test_a_bad_url_is_a_config_error_naming_what_is_wrong(url: str, message: str) -> None:
    """Each mistake in the URL is refused before anything connects."""
    with pytest.raises(ConfigError, match=message):
        open_transport(url)


def test_describe_hides_credentials() -> None:
    """The printable form has server, subject and stream, never the password."""
    transport = NatsTransport("nats://user:hunter22@127.0.0.1:4222/orders.triggers")
    assert transport.describe() == "nats://127.0.0.1:4222/orders.triggers (stream ORDERS_TRIGGERS)"
    transport.close()


@pytest.mark.parametrize(
    ("pattern", "subject", "captured"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.b", "a.c", False),
    ],
)
def test_stream_subjects_match_as_nats_does(pattern: str, subject: str, captured: bool) -> None:
    """``*`` stands for one token, ``>`` for one or more."""
    assert subject_matches(pattern, subject) is captured


def test_a_missing_nats_py_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without nats-py, opening a nats:// transport says which extra to install."""
    import sys

    monkeypatch.delitem(sys.modules, "phasegate.transports.nats", raising=False)
    monkeypatch.setitem(sys.modules, "nats", None)
    with pytest.raises(ConfigError, match=r"pip install 'phasegate\[nats\]'"):
        open_transport("nats://127.0.0.1:4222/orders.triggers")


def test_a_completed_phase_lands_in_the_stream_once_through_the_cli(
    names: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`phasegate complete` ×2 triggers via nats://; `dispatch` has nothing left; one message."""
    from phasegate.cli import main

    subject, stream = names
    config = tmp_path / "phasegate.toml"
    config.write_text(
        f'[pipeline]\nname = "orders"\n[stores]\nprimary = "sqlite:///{tmp_path}/p.db"\n'
        f'backup = "sqlite:///{tmp_path}/b.db"\n'
        f'[triggers]\ntransport = "{NATS_URL}/{subject}?stream={stream}"\n'
        '[[phases]]\nname = "extract"\nprocessors = ["api", "files"]\nnext = "load"\n'
        '[[phases]]\nname = "load"\nprocessors = ["warehouse"]\n'
    )
    for processor in ("api", "files", "files"):
        args = ["complete", "--config", str(config), "--phase", "extract"]
        assert main([*args, "--run-key", "2026-01-28", "--processor", processor]) == 0
    out = capsys.readouterr().out
    assert "phase extract complete: trigger" in out
    assert " delivered" in out
    assert main(["dispatch", "--config", str(config)]) == 0
    message = inspect(NATS_URL, lambda js: js.get_msg(stream, 1))
    info = inspect(NATS_URL, lambda js: js.stream_info(stream))
    assert info.state.messages == 1
    body = json.loads(message.data)
    assert (body["phase"], body["next_phase"], body["run_key"]) == ("extract", "load", "2026-01-28")
    assert message.headers["Nats-Msg-Id"] == body["trigger_id"]
