"""The alerts the recording of reports raises: both stores failing a batch (and their
recovery, once, with the next batch recorded), and a processor reporting failure."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from phasegate.claiming import component
from phasegate.errors import BothStoresFailed
from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.model import Completion

if TYPE_CHECKING:
    from phasegate.config import Pipeline

log = logging.getLogger(__name__)


class WriteAlerts:
    """Mixed into :class:`~phasegate.orchestrator.Orchestrator`."""

    pipeline: Pipeline
    events: EventBus
    _state_lock: threading.Lock
    _stores_down: bool

    def _stores_failed(self, completions: Sequence[Completion], exc: BothStoresFailed) -> None:
        first = completions[0]
        self.events.emit(
            Event(
                EventKind.BOTH_STORES_FAILED,
                Severity.CRITICAL,
                component(self.pipeline.phase(first.phase)),
                f"{len(completions)} completion(s) (first: {first.processor} for "
                f"{first.run_key}) were not recorded: both stores failed ({exc})",
                run_key=first.run_key,
                phase=first.phase,
                correlation_id=first.correlation_id,
                error=exc,
            ),
            already_logged=True,
        )
        with self._state_lock:
            self._stores_down = True

    def _stores_ok(self, completions: Sequence[Completion]) -> None:
        with self._state_lock:
            recovered, self._stores_down = self._stores_down, False
        if recovered:
            first = completions[0]
            self.events.emit(
                Event(
                    EventKind.STORES_RECOVERED,
                    Severity.RESOLVED,
                    component(self.pipeline.phase(first.phase)),
                    "completions are recorded again",
                    run_key=first.run_key,
                    phase=first.phase,
                )
            )

    def _report_failure(self, completion: Completion, succeeded: frozenset[str]) -> None:
        phase = self.pipeline.phase(completion.phase)
        if completion.processor in succeeded:
            log.info(
                "late failure of %s for %s ignored: it already succeeded",
                completion.processor,
                completion.run_key,
            )
            return
        self.events.emit(
            Event(
                EventKind.PROCESSOR_FAILED,
                Severity.WARNING,
                component(phase),
                f"processor {completion.processor} reported failed for {completion.run_key}",
                run_key=completion.run_key,
                phase=completion.phase,
                correlation_id=completion.correlation_id,
                details={"processor": completion.processor, **dict(completion.metadata)},
            )
        )
