"""A run's summary: each phase's state, when it triggered, how long it took, who failed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from phasegate.clock import utc_iso
from phasegate.config import SlackConfig, format_duration
from phasegate.model import PhaseState
from phasegate.orchestrator import Orchestrator, PhaseStatus

if TYPE_CHECKING:
    from phasegate.redact import Scrubber


@dataclass(frozen=True, slots=True)
class PhaseSummary:
    """One phase of a run, as the daily summary tells it."""

    status: PhaseStatus
    duration_seconds: float | None

    @property
    def line(self) -> str:
        """One human line about this phase."""
        s = self.status
        text = f"{s.phase}: {s.state.value}"
        if s.trigger is not None:
            text += f" at {s.trigger.claimed_at:%H:%M:%S} UTC"
            if s.trigger.trigger.reason.value != "complete":
                text += f" ({s.trigger.trigger.reason.value})"
        if self.duration_seconds is not None:
            text += f", took {format_duration_seconds(self.duration_seconds)}"
        if s.failed:
            text += f"; failed: {', '.join(s.failed)}"
        if s.missing and s.state is not PhaseState.NOT_STARTED:
            text += f"; missing: {', '.join(s.missing)}"
        return text


def format_duration_seconds(seconds: float) -> str:
    """``5400.0`` → ``"1h30m"``."""
    return format_duration(timedelta(seconds=round(seconds)))


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The summary of one run."""

    pipeline: str
    run_key: str
    phases: tuple[PhaseSummary, ...]
    generated_at: datetime

    @property
    def ok(self) -> bool:
        """Every phase triggered, none by timeout or by hand."""
        return all(
            p.status.state is PhaseState.TRIGGERED
            and p.status.trigger is not None
            and p.status.trigger.trigger.reason.value == "complete"
            for p in self.phases
        )

    @property
    def title(self) -> str:
        """The headline."""
        done = sum(1 for p in self.phases if p.status.state is PhaseState.TRIGGERED)
        return f"{self.pipeline} run {self.run_key}: {done}/{len(self.phases)} phases triggered"

    def to_text(self) -> str:
        """Plain text for the terminal."""
        return "\n".join([self.title, *(f"  {p.line}" for p in self.phases)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "pipeline": self.pipeline,
            "run_key": self.run_key,
            "ok": self.ok,
            "generated_at": utc_iso(self.generated_at),
            "phases": [
                p.status.to_dict() | {"duration_seconds": p.duration_seconds} for p in self.phases
            ],
        }


def summarise_run(orchestrator: Orchestrator, run_key: str) -> RunSummary:
    """Build the summary of ``run_key`` from both stores."""
    statuses = orchestrator.run_status(run_key)
    executions = {
        e.phase: e
        for e in orchestrator.tracker.phase_executions(
            limit=len(orchestrator.pipeline.phases), run_key=run_key
        )
    }
    phases = tuple(
        PhaseSummary(
            status,
            executions[status.phase].duration_seconds if status.phase in executions else None,
        )
        for status in statuses
    )
    return RunSummary(orchestrator.pipeline.name, run_key, phases, orchestrator.clock.now())


def send_summary(
    summary: RunSummary,
    slack: SlackConfig,
    *,
    scrubber: Scrubber | None = None,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Post ``summary`` to the ``[alerts.slack]`` webhook as a Block Kit message.

    Raises ``AlertDeliveryError`` (message masked by ``scrubber``) when Slack refuses it.
    """
    from phasegate.alerts.base import AlertDeliveryError  # noqa: PLC0415 - slack_sdk on demand
    from phasegate.alerts.slack import SlackSink, run_summary_payload  # noqa: PLC0415

    options: dict[str, Any] = {"sleep": sleep}
    if scrubber is not None:
        options["scrubber"] = scrubber
    sink = SlackSink(slack.webhook_url.reveal(), **options)
    payload = run_summary_payload(
        summary.title,
        [p.line for p in summary.phases],
        summary.ok,
        f"generated {summary.generated_at:%Y-%m-%d %H:%M:%S} UTC",
    )
    try:
        sink.post(payload)
    except AlertDeliveryError as exc:
        raise AlertDeliveryError(f"summary not sent: {exc}") from None
    finally:
        sink.close()
