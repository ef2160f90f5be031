"""A Cloud Functions (2nd gen) entry point for Pub/Sub-triggered completions.

Deploy it once per completions topic in place of the old per-transition orchestrators
(``main.py`` re-exports :func:`record_completion`; see ``examples/gcp-function``)::

    gcloud functions deploy phasegate-completions --gen2 --runtime=python312 \\
        --region=europe-west1 --source=. --entry-point=record_completion \\
        --trigger-topic=phasegate-completions --retry \\
        --set-env-vars=PHASEGATE_CONFIG=phasegate.toml

Each instance opens its runtime once, from the pipeline file named by
``$PHASEGATE_CONFIG``; ``$PHASEGATE_PHASE`` names the phase of messages whose body names
none (one function per old per-phase topic). A completion that neither store recorded
raises, so Pub/Sub (with ``--retry``) delivers the event again; a malformed message is
dead-lettered (logged at ERROR, alerted, acknowledged) when ``[server.pubsub_push]
dead_letter = true``, and raises otherwise.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import functions_framework
from cloudevents.http import CloudEvent

from phasegate.config import find_config_path, load_pipeline
from phasegate.errors import StoreError, ValidationError
from phasegate.orchestrator import CompletionResult
from phasegate.pubsub import dead_letter, decode_envelope, record_report
from phasegate.runtime import Runtime, open_runtime

log = logging.getLogger(__name__)

PHASE_ENV = "PHASEGATE_PHASE"
ALERT_DRAIN_SECONDS = 10.0


class InstanceRuntime:
    """The runtime of one function instance, opened on first use (thread-safe)."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    def get(self) -> Runtime:
        """The runtime, opened from ``$PHASEGATE_CONFIG`` the first time."""
        with self._lock:
            if self._runtime is None:
                self._runtime = open_runtime(load_pipeline(find_config_path()))
            return self._runtime

    def reset(self) -> None:
        """Close the runtime; the next event opens it again (tests, config changes)."""
        with self._lock:
            runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()


INSTANCE = InstanceRuntime()


def handle_pubsub_event(
    runtime: Runtime, data: Any, *, default_phase: str | None = None
) -> CompletionResult | None:
    """Record the completion carried by a Pub/Sub CloudEvent's data and deliver the
    triggers that are due; ``None`` when the message was dead-lettered.

    Raises BothStoresFailed when nothing was recorded and ValidationError for a malformed
    message when dead-lettering is off: the function then fails and Pub/Sub retries.
    """
    settings = runtime.pipeline.server.pubsub_push
    message = None
    try:
        message = decode_envelope(data)
        result = record_report(runtime.orchestrator, message, default_phase)
    except ValidationError as exc:
        if settings is None or not settings.dead_letter:
            raise
        envelope_message = data.get("message") if isinstance(data, Mapping) else None
        message_id = (
            envelope_message.get("messageId") if isinstance(envelope_message, dict) else None
        )
        dead_letter(
            runtime.events,
            "pubsub-function",
            exc.code,
            str(exc),
            message,
            message_id=message_id if isinstance(message_id, str) else None,
        )
        return None
    try:
        runtime.dispatcher.run_once()
    except StoreError as exc:  # recorded; the trigger waits in the outbox for the next pass
        log.warning("dispatch after recording failed: %s", exc)
    return result


@functions_framework.cloud_event
def record_completion(cloud_event: CloudEvent) -> None:
    """The entry point: a ``google.cloud.pubsub.topic.v1.messagePublished`` CloudEvent."""
    runtime = INSTANCE.get()
    try:
        result = handle_pubsub_event(
            runtime, cloud_event.get_data(), default_phase=os.environ.get(PHASE_ENV)
        )
    finally:
        # Cloud Functions throttles the CPU once the event is answered: send alerts now.
        if runtime.alerter is not None:
            runtime.alerter.drain(ALERT_DRAIN_SECONDS)
    if result is not None:
        completion = result.completion
        log.info(
            "recorded %s/%s %s for %s%s",
            completion.phase,
            completion.processor,
            completion.status.value,
            completion.run_key,
            f"; triggered {result.trigger_id}" if result.claimed else "",
        )
