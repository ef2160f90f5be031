"""``phasegate consume pubsub://PROJECT/SUBSCRIPTION``: pull completions from Pub/Sub.

For users without a public endpoint. Each message is acknowledged only after its
completion is recorded (at-least-once in; recording is idempotent), so a store outage
leaves the message to be redelivered. A malformed message is dead-lettered (acknowledged,
logged at ERROR and alerted) when configured, else left for redelivery (and for the
subscription's own dead-letter topic, if it has one). Synchronous pulls of at most
``max_messages``, each batch finished before the next pull, bound what is in flight.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from phasegate.errors import ConfigError, PhasegateError, StoreError, ValidationError
from phasegate.pubsub import dead_letter, decode_data, record_report
from phasegate.runtime import Runtime

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGES = 50
DEFAULT_PULL_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ConsumeReport:
    """What one pull did, by message id (and the trigger ids its completions claimed)."""

    recorded: tuple[str, ...] = ()
    dead_lettered: tuple[str, ...] = ()
    redelivered: tuple[str, ...] = ()
    triggered: tuple[str, ...] = ()
    error: str | None = None

    @property
    def received(self) -> int:
        """How many messages the pull returned."""
        return len(self.recorded) + len(self.dead_lettered) + len(self.redelivered)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``--format json``)."""
        return {
            "recorded": list(self.recorded),
            "dead_lettered": list(self.dead_lettered),
            "redelivered": list(self.redelivered),
            "triggered": list(self.triggered),
            "error": self.error,
        }

    def to_text(self) -> str:
        """One line for people."""
        if self.error is not None:
            return f"pull failed: {self.error}"
        return (
            f"{len(self.recorded)} recorded, {len(self.dead_lettered)} dead-lettered, "
            f"{len(self.redelivered)} left for redelivery, "
            f"{len(self.triggered)} trigger(s) claimed"
        )


class PubSubConsumer:
    """Pulls completion messages from one subscription and records them."""

    def __init__(
        self,
        runtime: Runtime,
        url: str,
        *,
        dead_letter: bool = False,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        pull_timeout: float = DEFAULT_PULL_TIMEOUT,
        default_phase: str | None = None,
        subscriber: Any | None = None,
    ) -> None:
        from phasegate.transports.pubsub import parse_pubsub_url  # noqa: PLC0415

        project, name, options = parse_pubsub_url(url, "subscription")
        if options:
            raise ConfigError(f"{url!r}: a subscription URL takes no options")
        if not 1 <= max_messages <= 1000:
            raise ConfigError(f"max_messages must be from 1 to 1000, got {max_messages}")
        self.runtime = runtime
        self.dead_letter = dead_letter
        self.max_messages = max_messages
        self.pull_timeout = pull_timeout
        self.default_phase = default_phase
        if subscriber is None:
            from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]  # noqa: PLC0415

            subscriber = pubsub_v1.SubscriberClient()
        self._subscriber = subscriber
        self.subscription: str = subscriber.subscription_path(project, name)

    def run_once(self) -> ConsumeReport:
        """Pull once, record each message, then acknowledge what was recorded or
        dead-lettered and hand the rest back for redelivery; deliver claimed triggers."""
        try:
            received = self._pull()
        except PhasegateError as exc:
            log.warning("pull from %s failed: %s", self.subscription, exc)
            return ConsumeReport(error=str(exc))
        acks: list[str] = []
        nacks: list[str] = []
        ids: dict[str, list[str]] = {"recorded": [], "dead_lettered": [], "redeliver": []}
        claimed: list[str] = []
        for item in received:
            outcome, trigger_id = self._record(item.message)
            (nacks if outcome == "redeliver" else acks).append(item.ack_id)
            ids[outcome].append(item.message.message_id)
            if trigger_id:
                claimed.append(trigger_id)
        self._settle(acks, nacks)
        if received:
            try:
                self.runtime.dispatcher.run_once()
            except StoreError as exc:  # the triggers wait in the outbox for the next pass
                log.warning("dispatch after the pull failed: %s", exc)
        return ConsumeReport(
            recorded=tuple(ids["recorded"]),
            dead_lettered=tuple(ids["dead_lettered"]),
            redelivered=tuple(ids["redeliver"]),
            triggered=tuple(claimed),
        )

    def _pull(self) -> list[Any]:
        from google.api_core import exceptions  # noqa: PLC0415

        from phasegate.transports.pubsub import map_pubsub_error  # noqa: PLC0415

        try:
            response = self._subscriber.pull(
                request={"subscription": self.subscription, "max_messages": self.max_messages},
                timeout=self.pull_timeout,
                retry=None,  # run_forever backs off; a retried pull would hold the batch
            )
        except exceptions.DeadlineExceeded:
            return []  # nothing arrived while we waited
        except Exception as exc:  # noqa: BLE001 - every client failure maps to ours
            raise map_pubsub_error(exc, f"pull {self.subscription}") from None
        return list(response.received_messages)

    def _record(self, message: Any) -> tuple[str, str | None]:
        """``(outcome, claimed trigger id)``; outcome is recorded, dead_lettered or redeliver."""
        try:
            report = decode_data(
                message.data, dict(message.attributes), message.message_id, self.subscription
            )
            result = record_report(self.runtime.orchestrator, report, self.default_phase)
        except ValidationError as exc:
            if not self.dead_letter:
                log.warning(
                    "message %s on %s refused (%s: %s); left for redelivery",
                    message.message_id,
                    self.subscription,
                    exc.code,
                    exc,
                )
                return "redeliver", None
            dead_letter(
                self.runtime.events,
                "pubsub-consume",
                exc.code,
                str(exc),
                message_id=message.message_id,
                subscription=self.subscription,
            )
            return "dead_lettered", None
        except StoreError as exc:
            log.warning(
                "message %s not recorded (%s); left for redelivery", message.message_id, exc
            )
            return "redeliver", None
        except Exception:
            log.exception("unexpected error on message %s; left for redelivery", message.message_id)
            return "redeliver", None
        return "recorded", result.trigger_id if result.claimed else None

    def _settle(self, acks: list[str], nacks: list[str]) -> None:
        # A lost ack only means a redelivery, which records idempotently.
        try:
            if acks:
                self._subscriber.acknowledge(
                    request={"subscription": self.subscription, "ack_ids": acks}
                )
            if nacks:
                self._subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": nacks,
                        "ack_deadline_seconds": 0,
                    }
                )
        except Exception as exc:  # noqa: BLE001
            log.warning("could not settle messages on %s: %s", self.subscription, exc)

    def run_forever(
        self,
        stop: threading.Event,
        *,
        on_report: Callable[[ConsumeReport], None] | None = None,
        backoff: float = 5.0,
    ) -> None:
        """Pull until ``stop`` is set; the batch in hand is finished (and acknowledged) first."""
        while not stop.is_set():
            report = self.run_once()
            if on_report is not None:
                on_report(report)
            if report.error is not None:
                stop.wait(backoff)

    def close(self) -> None:
        """Close the subscriber's channel."""
        self._subscriber.close()


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM or SIGINT while inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: object) -> None:
        log.info("received %s; finishing the current batch", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
