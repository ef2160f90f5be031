"""``nats://HOST:PORT/SUBJECT`` — publish each trigger to a JetStream stream.

The trigger JSON is published with ``Nats-Msg-Id: <trigger_id>`` and the call returns
once the stream acknowledged it, so the stream keeps each trigger once within its
duplicate window even when phasegate delivers it twice (a duplicate ack counts as
delivered). The stream is created when missing; an existing one is used as it is.

nats-py is asyncio-only while transports are synchronous: the transport owns a private
event loop on its own thread and submits coroutines to it. It connects lazily, without
nats-py's background reconnection (a publish buffered during a reconnect would outlive
its caller's timeout); after the server drops, the next call connects again.

Query options: ``stream=NAME`` (default: the subject in capitals, dots as ``_``),
``duplicate_window=2m`` (used only when creating the stream), ``timeout=5s`` (connect,
acknowledgement and stream calls each).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck

from phasegate.config import parse_duration
from phasegate.errors import ConfigError, DeliveryError, TransientDeliveryError
from phasegate.model import Trigger
from phasegate.redact import redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_PORT = 4222
DEFAULT_DUPLICATE_WINDOW = timedelta(minutes=2)
DEFAULT_TIMEOUT = timedelta(seconds=5)
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_SUBJECT = re.compile(r"^[^\s.*>]+(\.[^\s.*>]+)*$")
_OPTIONS = {"stream", "duplicate_window", "timeout"}

# What a retry may fix: the server or JetStream unreachable, busy or slow.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,  # asyncio's, nats-py's and concurrent.futures' timeouts are all this
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionDrainingError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
)
# What it will not: credentials, a bad subject or payload, a stream that refuses it.
_PERMANENT: tuple[type[BaseException], ...] = (
    nats.errors.AuthorizationError,
    nats.errors.BadSubjectError,
    nats.errors.MaxPayloadError,
    nats.js.errors.APIError,
)
_ANY_NATS_ERROR: tuple[type[BaseException], ...] = (*_TRANSIENT, *_PERMANENT, nats.errors.Error)


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """What a ``nats://`` URL asks for."""

    server: str
    subject: str
    stream: str
    duplicate_window: timedelta = DEFAULT_DUPLICATE_WINDOW
    timeout: timedelta = DEFAULT_TIMEOUT

    @classmethod
    def from_url(cls, url: str) -> NatsSettings:
        """Parse ``nats://[user:password@]HOST[:PORT]/SUBJECT[?stream=&duplicate_window=&timeout=]``."""
        where = f"trigger transport {redact_url(url)}"
        parts = urlsplit(url)
        if parts.scheme.lower() != "nats" or not parts.hostname:
            raise ConfigError(f"{where}: expected nats://HOST:PORT/SUBJECT")
        subject = unquote(parts.path.lstrip("/"))
        if not _SUBJECT.match(subject):
            raise ConfigError(
                f"{where}: subject {subject!r} is not a NATS subject to publish to; "
                "expected dot-separated tokens without spaces or wildcards, e.g. /pipeline.triggers"
            )
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(
                f"{where}: unknown option(s) {', '.join(unknown)}; "
                f"expected: {', '.join(sorted(_OPTIONS))}"
            )
        stream = options.get("stream") or subject.upper().replace(".", "_")
        if not _STREAM_NAME.match(stream):
            raise ConfigError(
                f"{where}: stream name {stream!r} may hold only letters, digits, '_' and '-'"
            )
        durations = {}
        for key, default in (
            ("duplicate_window", DEFAULT_DUPLICATE_WINDOW),
            ("timeout", DEFAULT_TIMEOUT),
        ):
            try:
                durations[key] = parse_duration(options[key]) if key in options else default
            except ValueError as exc:
                raise ConfigError(f"{where}: {key}: {exc}") from None
        port = parts.port or DEFAULT_PORT
        userinfo = parts.netloc.rpartition("@")[0]
        credentials = f"{userinfo}@" if userinfo else ""
        return cls(
            server=f"nats://{credentials}{parts.hostname}:{port}",
            subject=subject,
            stream=stream,
            duplicate_window=durations["duplicate_window"],
            timeout=durations["timeout"],
        )


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether stream subject ``pattern`` (``*`` one token, ``>`` the rest) captures ``subject``."""
    wanted, parts = pattern.split("."), subject.split(".")
    for index, part in enumerate(wanted):
        if part == ">":
            return len(parts) > index
        if index >= len(parts) or part not in {"*", parts[index]}:
            return False
    return len(wanted) == len(parts)


class _LoopThread:
    """A private asyncio event loop running on its own daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coroutine`` on the loop and wait for it (cancelled after ``timeout``)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        """Cancel what still runs on the loop, stop it and close it."""
        if self.loop.is_closed():
            return
        try:
            self.run(self._cancel_tasks(), 5.0)
        except (TimeoutError, RuntimeError):
            log.warning("nats transport: tasks still running at close")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self.loop.close()

    @staticmethod
    async def _cancel_tasks() -> None:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_asyncgens()


class NatsTransport:
    """Publishes triggers to a JetStream stream, waiting for the stream's acknowledgement."""

    def __init__(self, url: str) -> None:
        self.settings = NatsSettings.from_url(url)
        self._label = (
            f"{redact_url(self.settings.server)}/{self.settings.subject} "
            f"(stream {self.settings.stream})"
        )
        self._timeout = self.settings.timeout.total_seconds()
        self._runner: _LoopThread | None = None
        self._runner_lock = threading.Lock()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False

    # -- the synchronous side --------------------------------------------------------------

    def deliver(self, trigger: Trigger) -> None:
        """Publish the trigger JSON with its id as ``Nats-Msg-Id``; return once it is stored."""
        ack = self._call(self._publish(trigger), f"publish of trigger {trigger.trigger_id}")
        if ack.duplicate:
            log.info(
                "trigger %s was already in stream %s (seq %d): kept once",
                trigger.trigger_id,
                ack.stream,
                ack.seq,
            )

    def ping(self) -> None:
        """Round-trip to the server and read the stream's info (created if missing)."""
        self._call(self._ping(), "ping")

    def describe(self) -> str:
        """Server, subject and stream, without credentials."""
        return self._label

    def close(self) -> None:
        """Close the connection and stop the transport's event loop thread."""
        with self._runner_lock:
            runner, self._closed = self._runner, True
        if runner is None or runner.loop.is_closed():
            return
        try:
            runner.run(self._disconnect(), self._timeout + 1)
        except _ANY_NATS_ERROR as exc:
            log.warning("nats transport %s: close: %s", self._label, type(exc).__name__)
        runner.stop()

    def _loop(self) -> _LoopThread:
        """The transport's event loop thread, started on first use."""
        with self._runner_lock:
            if self._closed:
                raise DeliveryError(f"NATS {self._label}: the transport is closed")
            if self._runner is None:
                self._runner = _LoopThread("phasegate-nats")
            return self._runner

    def _call(self, coroutine: Coroutine[Any, Any, T], what: str) -> T:
        """Run ``coroutine`` on the loop; map nats-py's errors to phasegate's, in one place."""
        try:
            runner = self._loop()
        except DeliveryError:
            coroutine.close()
            raise
        try:
            # connect, stream check and publish each have their own timeout; this bounds all
            return runner.run(coroutine, 3 * self._timeout + 1)
        except DeliveryError:
            raise
        except nats.js.errors.APIError as exc:
            if isinstance(exc, _TRANSIENT):
                raise self._error(TransientDeliveryError, what, exc) from None
            raise self._error(DeliveryError, what, exc) from None
        except _PERMANENT as exc:
            raise self._error(DeliveryError, what, exc) from None
        except _ANY_NATS_ERROR as exc:  # the rest of nats-py's errors: worth a retry
            raise self._error(TransientDeliveryError, what, exc) from None

    def _error(self, kind: type[DeliveryError], what: str, exc: BaseException) -> DeliveryError:
        detail = str(exc) or "no answer in time"
        return kind(f"NATS {self._label}: {what} failed: {type(exc).__name__}: {detail}")

    # -- the event loop's side -------------------------------------------------------------

    async def _publish(self, trigger: Trigger) -> PubAck:
        js = await self._jetstream()
        ack: PubAck = await js.publish(
            self.settings.subject,
            trigger.to_json().encode(),
            timeout=self._timeout,
            stream=self.settings.stream,
            headers={"Nats-Msg-Id": trigger.trigger_id, "Content-Type": "application/json"},
        )
        return ack

    async def _ping(self) -> None:
        js = await self._jetstream()
        assert self._nc is not None
        await self._nc.flush(timeout=max(1, round(self._timeout)))
        await js.stream_info(self.settings.stream)

    async def _jetstream(self) -> JetStreamContext:
        """The JetStream context of a live connection, connecting (again) when needed."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._nc is not None and self._nc.is_connected and self._js is not None:
                return self._js
            await self._disconnect()
            nc = await asyncio.wait_for(self._connect(), self._timeout)
            try:
                js = nc.jetstream(timeout=self._timeout)
                await self._ensure_stream(js)
            except BaseException:
                await nc.close()
                raise
            self._nc, self._js = nc, js
            return js

    async def _connect(self) -> Client:
        async def on_error(exc: Exception) -> None:
            log.debug("nats %s: %s: %s", self._label, type(exc).__name__, exc)

        async def on_disconnect() -> None:
            if not self._closed:
                log.warning("nats connection to %s lost; reconnecting on next use", self._label)

        # No background reconnection (see the module docstring); two quick tries at most.
        client: Client = await nats.connect(
            servers=[self.settings.server],
            name="phasegate",
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            connect_timeout=self._timeout,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
        )
        return client

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Create the stream when it is missing; check an existing one captures the subject."""
        name, subject = self.settings.stream, self.settings.subject
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(
                    name=name,
                    subjects=[subject],
                    duplicate_window=self.settings.duplicate_window.total_seconds(),
                )
            except nats.js.errors.BadRequestError:
                info = await js.stream_info(name)  # another replica created it first
            else:
                log.info(
                    "created JetStream stream %s for %s (duplicate window %ss)",
                    name,
                    subject,
                    self.settings.duplicate_window.total_seconds(),
                )
                return
        subjects = list(info.config.subjects or [])
        if not any(subject_matches(pattern, subject) for pattern in subjects):
            raise DeliveryError(
                f"NATS {self._label}: stream {name} exists but does not capture subject "
                f"{subject} (its subjects: {', '.join(subjects) or 'none'}); "
                "name another stream with ?stream= or add the subject to it"
            )

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()
