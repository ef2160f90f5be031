"""``pubsub://PROJECT/TOPIC`` — publish each trigger to a Google Cloud Pub/Sub topic.

The message data is the trigger JSON; its attributes carry ``trigger_id``, ``pipeline``,
``phase``, ``run_key`` and ``reason`` so subscribers can filter and de-duplicate without
decoding. ``deliver`` returns only once Pub/Sub acknowledged the publish. With
``PUBSUB_EMULATOR_HOST`` set, the official client talks to the emulator anonymously.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

from phasegate.errors import ConfigError, DeliveryError, TransientDeliveryError
from phasegate.model import Trigger

DEFAULT_TIMEOUT = 30.0
EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"


def parse_pubsub_url(url: str, kind: str = "topic") -> tuple[str, str, dict[str, str]]:
    """``pubsub://PROJECT/NAME[?timeout=SECONDS]`` → ``(project, name, options)``."""
    parts = urlsplit(url)
    name = parts.path.strip("/")
    if parts.scheme != "pubsub" or not parts.netloc or not name or "/" in name:
        raise ConfigError(
            f"bad Pub/Sub URL {url!r}; expected pubsub://PROJECT/{kind.upper()}, "
            f"e.g. pubsub://my-project/phasegate-{kind}s"
        )
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return parts.netloc, name, options


def _timeout_option(options: dict[str, str], default: float) -> float:
    raw = options.pop("timeout", None)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise ConfigError(f"Pub/Sub URL option timeout={raw!r}: expected seconds from 0 to 600")
    return value


def map_pubsub_error(exc: BaseException, action: str) -> DeliveryError:
    """The phasegate error for a Pub/Sub client failure: transient unless retrying cannot help."""
    name = type(exc).__name__
    permanent = (
        gexc.NotFound,
        gexc.PermissionDenied,
        gexc.Unauthenticated,
        gexc.InvalidArgument,
        gexc.FailedPrecondition,
    )
    if isinstance(exc, permanent):
        message = getattr(exc, "message", None) or str(exc)
        return DeliveryError(f"{action} refused ({name}): {message}"[:500])
    if isinstance(exc, concurrent.futures.TimeoutError | TimeoutError):
        return TransientDeliveryError(f"{action}: no acknowledgement in time")
    return TransientDeliveryError(f"{action} failed ({name}): {exc}"[:500])


class PubSubTransport:
    """Publishes triggers to one topic and waits for Pub/Sub's acknowledgement of each."""

    def __init__(
        self, url: str, *, timeout: float | None = None, publisher: Any | None = None
    ) -> None:
        project, topic, options = parse_pubsub_url(url, "topic")
        self.timeout = timeout if timeout is not None else _timeout_option(options, DEFAULT_TIMEOUT)
        options.pop("timeout", None)
        if options:
            raise ConfigError(f"Pub/Sub URL {url!r}: unknown option(s) {', '.join(options)}")
        self.project = project
        self.topic = topic
        self._publisher = publisher or self._open_publisher()
        self.topic_path: str = self._publisher.topic_path(project, topic)

    def _open_publisher(self) -> Any:
        # The dispatcher retries with backoff and alerts; the client only absorbs blips
        # within one delivery's timeout instead of retrying forever (its default).
        retry = Retry(
            initial=0.1,
            maximum=2.0,
            multiplier=2.0,
            timeout=self.timeout,
            predicate=if_exception_type(
                gexc.ServiceUnavailable,
                gexc.DeadlineExceeded,
                gexc.InternalServerError,
                gexc.Aborted,
                gexc.ResourceExhausted,
                gexc.Unknown,
            ),
        )
        return pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.01),
            publisher_options=pubsub_v1.types.PublisherOptions(retry=retry, timeout=self.timeout),
        )

    @staticmethod
    def attributes(trigger: Trigger) -> dict[str, str]:
        """The message attributes of ``trigger`` (strings, as Pub/Sub requires);
        ``next_phase`` too when there is one, so each phase's subscription can filter on it."""
        attributes = {
            "trigger_id": trigger.trigger_id,
            "pipeline": trigger.pipeline,
            "phase": trigger.phase,
            "run_key": trigger.run_key,
            "reason": trigger.reason.value,
        }
        if trigger.next_phase:
            attributes["next_phase"] = trigger.next_phase
        return attributes

    def deliver(self, trigger: Trigger) -> None:
        """Publish ``trigger`` and wait for the acknowledgement."""
        error = self.deliver_many([trigger])[0]
        if error is not None:
            raise error

    def deliver_many(self, triggers: Sequence[Trigger]) -> list[DeliveryError | None]:
        """Publish every trigger in one client batch; one outcome per trigger, in order."""
        futures: list[Any] = []
        outcomes: list[DeliveryError | None] = []
        for trigger in triggers:
            try:
                futures.append(
                    self._publisher.publish(
                        self.topic_path, trigger.to_json().encode(), **self.attributes(trigger)
                    )
                )
            except Exception as exc:  # noqa: BLE001 - every client failure maps to ours
                futures.append(map_pubsub_error(exc, f"publish {trigger.trigger_id}"))
        # One deadline for the whole batch, not one per message.
        concurrent.futures.wait(
            [f for f in futures if not isinstance(f, DeliveryError)], timeout=self.timeout
        )
        for trigger, future in zip(triggers, futures, strict=True):
            if isinstance(future, DeliveryError):
                outcomes.append(future)
                continue
            try:
                future.result(timeout=0)
            except Exception as exc:  # noqa: BLE001
                outcomes.append(
                    map_pubsub_error(exc, f"publish {trigger.trigger_id} to {self.describe()}")
                )
            else:
                outcomes.append(None)
        return outcomes

    def ping(self) -> None:
        """Read the topic's metadata: the topic exists and Pub/Sub answers."""
        try:
            self._publisher.get_topic(
                request={"topic": self.topic_path}, timeout=min(self.timeout, 10.0), retry=None
            )
        except Exception as exc:  # noqa: BLE001
            raise map_pubsub_error(exc, f"get topic {self.describe()}") from None

    def describe(self) -> str:
        """``pubsub://PROJECT/TOPIC`` (and the emulator, when one is used)."""
        emulator = os.environ.get(EMULATOR_ENV)
        where = f"pubsub://{self.project}/{self.topic}"
        return f"{where} (emulator {emulator})" if emulator else where

    def close(self) -> None:
        """Flush pending publishes and stop the client's batching thread."""
        try:
            self._publisher.stop()
        except RuntimeError:
            return  # already stopped
