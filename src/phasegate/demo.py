"""``phasegate demo``: a realistic day of a 5-phase pipeline on embedded SQLite, with chaos.

Several run keys, every processor reporting concurrently, duplicate and out-of-order
reports, a processor that fails then succeeds, a primary-store outage window and a
short transient fault on the backup. At the end every guarantee is checked; the exit
code is 0 only if all of them hold.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from phasegate.config import (
    Pipeline,
    StoresConfig,
    TriggersConfig,
)
from phasegate.errors import BothStoresFailed
from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.model import PhaseState, Status, Trigger
from phasegate.packaged import demo_pipeline
from phasegate.resilience.retry import RetryPolicy
from phasegate.runtime import Runtime, Tuning, open_runtime
from phasegate.stores.sql import SqlStore
from phasegate.testing import FaultSwitch
from phasegate.transports.log import LogTransport

# Everything runs 20x faster than production so the day fits in a few seconds.
DEMO_TUNING = Tuning(
    primary_policy=RetryPolicy(attempts=3, base=0.05, max_delay=0.5),
    backup_policy=RetryPolicy(attempts=3, base=0.05, max_delay=0.75),
    breaker_reset=0.5,
    delivery_policy=RetryPolicy(attempts=3, base=0.01, max_delay=0.1),
    redelivery_base=0.1,
)
OUTAGE_START, OUTAGE_SECONDS = 1.0, 1.5
BLIP_START, BLIP_SECONDS = 3.2, 0.04
DEADLINE_SECONDS = 25.0

_STYLE = {
    PhaseState.NOT_STARTED: ("·", "dim"),
    PhaseState.WAITING: ("…", "yellow"),
    PhaseState.COMPLETE: ("✓", "cyan"),
    PhaseState.TRIGGERED: ("→", "green"),
    PhaseState.TIMED_OUT: ("✗", "red"),
}


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one processor will do in one run."""

    phase: str
    run_key: str
    processor: str
    work_seconds: float
    fail_first: bool
    duplicate_after: float | None
    late_failure: bool


class _Receiver:
    """The next phase's side: logs each trigger and starts that phase once per trigger id."""

    def __init__(self, path: Path, start_phase: object) -> None:
        self._log = LogTransport(path)
        self._start_phase = start_phase
        self._lock = threading.Lock()
        self.deliveries: Counter[str] = Counter()
        self.triggers: dict[str, Trigger] = {}

    def deliver(self, trigger: Trigger) -> None:
        self._log.deliver(trigger)
        with self._lock:
            self.deliveries[trigger.trigger_id] += 1
            first = self.deliveries[trigger.trigger_id] == 1
            self.triggers[trigger.trigger_id] = trigger
        if first and trigger.next_phase:
            self._start_phase(trigger.next_phase, trigger.run_key)  # type: ignore[operator]

    def ping(self) -> None:
        self._log.ping()

    def describe(self) -> str:
        return self._log.describe()

    def close(self) -> None:
        self._log.close()


class Simulation:
    """One simulated day; :meth:`run` returns whether every check held."""

    def __init__(
        self, pipeline: Pipeline, runs: int, seed: int, state: Path, console: Console
    ) -> None:
        self.pipeline = pipeline
        self.console = console
        self.rng = random.Random(seed)
        self.run_keys = [(date(2026, 1, 24) + timedelta(days=i)).isoformat() for i in range(runs)]
        self.counts: Counter[str] = Counter()
        self.claims: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self.events = EventBus()
        self.events.subscribe(self._on_event)
        self.receiver = _Receiver(state / "triggers.jsonl", self.start_phase)
        self.runtime: Runtime = open_runtime(
            pipeline,
            tuning=DEMO_TUNING,
            transport=self.receiver,
            events=self.events,
            rng=random.Random(seed),
        )
        self.primary_fault = FaultSwitch().attach(self._sql(self.runtime.tracker.primary))
        self.backup_fault = FaultSwitch().attach(self._sql(self.runtime.tracker.backup))
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="processor")
        self._fail_first = {
            run: self.rng.choice(pipeline.phases[1].processors) for run in self.run_keys
        }

    @staticmethod
    def _sql(store: object) -> SqlStore:
        assert isinstance(store, SqlStore)
        return store

    def _on_event(self, event: Event) -> None:
        with self._lock:
            if event.severity in {Severity.WARNING, Severity.CRITICAL}:
                self.counts["alerts"] += 1
            if event.kind is EventKind.TRIGGER_CLAIMED and event.phase and event.run_key:
                self.claims[(event.phase, event.run_key)] += 1
            if event.kind is EventKind.BREAKER_OPENED:
                self.counts["breaker_trips"] += 1

    def _count(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[key] += amount

    # -- the simulated processors ----------------------------------------------------------

    def start_phase(self, phase: str, run_key: str) -> None:
        """Every processor of ``phase`` starts its part of ``run_key`` concurrently."""
        with self._lock:
            plans = [
                _Plan(
                    phase=phase,
                    run_key=run_key,
                    processor=processor,
                    work_seconds=self.rng.uniform(0.05, 0.3),
                    fail_first=self._fail_first.get(run_key) == processor,
                    duplicate_after=self.rng.uniform(0.0, 0.15)
                    if self.rng.random() < 0.25
                    else None,
                    late_failure=self.rng.random() < 0.05,
                )
                for processor in self.pipeline.phase(phase).processors
            ]
        for plan in plans:
            self.pool.submit(self._work, plan)

    def _work(self, plan: _Plan) -> None:
        time.sleep(plan.work_seconds)
        if plan.fail_first:
            self._report(plan, Status.FAILED)
            time.sleep(0.05)
            self._count("processor_retries")
        self._report(plan, Status.SUCCESS)
        if plan.duplicate_after is not None:
            time.sleep(plan.duplicate_after)
            self._count("duplicates_sent")
            self._report(plan, Status.SUCCESS)
        if plan.late_failure:
            self._count("late_failures_sent")
            self._report(plan, Status.FAILED)

    def _report(self, plan: _Plan, status: Status) -> None:
        """Report like a real processor: retry until the report is acknowledged."""
        for _attempt in range(200):
            self._count("sent")
            try:
                self.runtime.orchestrator.handle_completion(
                    plan.phase,
                    plan.run_key,
                    plan.processor,
                    status=status.value,
                    metadata={"rows": 1000, "demo": True},
                )
            except BothStoresFailed:
                self._count("unacknowledged")
                time.sleep(0.05)
                continue
            self._count("recorded")
            return
        self._count("gave_up")

    # -- the day ---------------------------------------------------------------------------

    def _chaos(self, started: float, stop: threading.Event) -> None:
        stop.wait(max(0.0, started + OUTAGE_START - time.monotonic()))
        if stop.is_set():
            return
        self.primary_fault.fail(OUTAGE_SECONDS)
        self._count("outages")
        stop.wait(max(0.0, started + BLIP_START - time.monotonic()))
        if not stop.is_set():
            self.backup_fault.fail(BLIP_SECONDS)
            self._count("blips")

    def _sweeper(self, stop: threading.Event) -> None:
        while not stop.wait(0.2):
            try:
                self.runtime.orchestrator.sweep(len(self.run_keys))
            except BothStoresFailed:
                continue

    def _grid(self, elapsed: float) -> Table:
        table = Table(
            title=f"phasegate demo — {self.pipeline.name} — {elapsed:4.1f}s", expand=False
        )
        table.add_column("run key")
        for phase in self.pipeline.phases:
            table.add_column(phase.name, justify="center")
        for run_key in self.run_keys:
            try:
                statuses = self.runtime.orchestrator.run_status(run_key)
            except BothStoresFailed:
                table.add_row(run_key, *["?" for _ in self.pipeline.phases])
                continue
            cells = []
            for status in statuses:
                mark, style = _STYLE[status.state]
                done = f"{len(status.succeeded)}/{len(status.expected)}"
                cells.append(f"[{style}]{mark} {done}[/{style}]")
            table.add_row(run_key, *cells)
        fault = "[red]primary DOWN[/red]" if self.primary_fault.active else "primary up"
        blip = " · [yellow]backup blip[/yellow]" if self.backup_fault.active else ""
        table.caption = (
            f"{fault}{blip} · reports sent {self.counts['sent']} · "
            f"triggers {sum(self.claims.values())}/{len(self.run_keys) * len(self.pipeline.phases)}"
        )
        return table

    def _finished(self) -> bool:
        last = self.pipeline.phases[-1].name
        with self._lock:
            return (
                all(self.claims[(last, run)] >= 1 for run in self.run_keys)
                and all(count >= 1 for count in self.receiver.deliveries.values())
                and len(self.receiver.deliveries) >= len(self.run_keys) * len(self.pipeline.phases)
            )

    def run(self) -> bool:
        stop = threading.Event()
        started = time.monotonic()
        self.runtime.start()
        dispatcher = threading.Thread(
            target=self.runtime.dispatcher.run_forever, args=(stop, 0.05), daemon=True
        )
        helpers = [
            dispatcher,
            threading.Thread(target=self._chaos, args=(started, stop), daemon=True),
            threading.Thread(target=self._sweeper, args=(stop,), daemon=True),
        ]
        for thread in helpers:
            thread.start()
        first = self.pipeline.phases[0].name
        with Live(self._grid(0.0), console=self.console, refresh_per_second=8) as live:
            for index, run_key in enumerate(self.run_keys):
                timer = threading.Timer(index * 0.4, self.start_phase, args=(first, run_key))
                timer.daemon = True
                timer.start()
            while time.monotonic() - started < DEADLINE_SECONDS and not self._finished():
                time.sleep(0.1)
                live.update(self._grid(time.monotonic() - started))
            self.pool.shutdown(wait=True)
            # A short day may end inside the outage window: let the outage run its course.
            while (self.primary_fault.active or self.backup_fault.active) and (
                time.monotonic() - started < DEADLINE_SECONDS
            ):
                time.sleep(0.05)
                live.update(self._grid(time.monotonic() - started))
            stop.set()
            for thread in helpers:
                thread.join(5)
            self.runtime.dispatcher.run_once()
            live.update(self._grid(time.monotonic() - started))
        self.counts["elapsed_ms"] = int((time.monotonic() - started) * 1000)
        self.runtime.tracker.resync()
        ok = self._summarise()
        self.runtime.close()
        return ok

    # -- the checks ------------------------------------------------------------------------

    def _summarise(self) -> bool:
        checks = self._checks()
        self.console.print()
        self.console.print(self._figures())
        verdict = Table(title="checks", show_header=False)
        verdict.add_column("ok")
        verdict.add_column("check")
        verdict.add_column("detail")
        for name, passed, detail in checks:
            verdict.add_row("[green]PASS[/green]" if passed else "[red]FAIL[/red]", name, detail)
        self.console.print(verdict)
        return all(passed for _n, passed, _d in checks)

    def _checks(self) -> list[tuple[str, bool, str]]:
        """Each guarantee the day must have kept: (what, held, detail)."""
        phases = [p.name for p in self.pipeline.phases]
        tracker = self.runtime.tracker
        checks: list[tuple[str, bool, str]] = []
        expected = {(phase, run) for phase in phases for run in self.run_keys}
        once = all(self.claims[key] == 1 for key in expected) and set(self.claims) == expected
        checks.append(
            (
                "every phase of every run triggered exactly once",
                once,
                f"{sum(self.claims.values())} claims for {len(expected)} phase-runs",
            )
        )
        stored_ok = True
        delivered_ok = True
        for run in self.run_keys:
            for store in (tracker.primary, tracker.backup):
                entries = store.triggers(run)
                stored_ok &= sorted(e.trigger.phase for e in entries) == sorted(phases)
                delivered_ok &= all(e.delivered for e in entries)
        checks.append(
            ("both stores hold exactly one trigger per phase-run", stored_ok, "primary and backup")
        )
        delivered_ok &= all(count >= 1 for count in self.receiver.deliveries.values())
        delivered_ok &= len(self.receiver.deliveries) == len(expected)
        redeliveries = sum(self.receiver.deliveries.values()) - len(self.receiver.deliveries)
        checks.append(
            (
                "every trigger delivered, same id on every delivery",
                delivered_ok,
                f"{redeliveries} redeliveries de-duplicated by id",
            )
        )
        complete_ok = True
        for run in self.run_keys:
            for store in (tracker.primary, tracker.backup):
                successes = {
                    (c.phase, c.processor)
                    for c in store.completions(run)
                    if c.status is Status.SUCCESS
                }
                complete_ok &= successes == {
                    (p.name, x) for p in self.pipeline.phases for x in p.processors
                }
        checks.append(
            (
                "every acknowledged completion is in both stores",
                complete_ok,
                "after catch-up of the store that was down",
            )
        )
        nothing_lost = self.counts["gave_up"] == 0
        checks.append(
            (
                "no report given up (unacknowledged ones were retried)",
                nothing_lost,
                f"{self.counts['unacknowledged']} unacknowledged, retried",
            )
        )
        return checks

    def _figures(self) -> Table:
        """What happened during the day, in figures."""
        tracker_counts = self.runtime.tracker.counts()
        figures = Table(title="summary", show_header=False)
        figures.add_column("what")
        figures.add_column("figure", justify="right")
        for label, value in [
            ("run keys simulated", len(self.run_keys)),
            ("completions sent", self.counts["sent"]),
            ("completions recorded (acknowledged)", self.counts["recorded"]),
            ("duplicate reports sent (absorbed)", self.counts["duplicates_sent"]),
            ("late failures after success (ignored)", self.counts["late_failures_sent"]),
            ("processors that failed then succeeded", self.counts["processor_retries"]),
            (
                "store write retries (primary / backup)",
                f"{tracker_counts.get('retries.primary', 0)} / "
                f"{tracker_counts.get('retries.backup', 0)}",
            ),
            ("breaker trips", self.counts["breaker_trips"]),
            (
                "claims deferred until the primary was back",
                tracker_counts.get("claims.deferred", 0),
            ),
            (
                "run keys replayed into a recovered store",
                tracker_counts.get("replayed.primary", 0)
                + tracker_counts.get("replayed.backup", 0),
            ),
            ("alerts raised (warning or critical)", self.counts["alerts"]),
            ("elapsed", f"{self.counts['elapsed_ms'] / 1000:.1f}s"),
        ]:
            figures.add_row(label, str(value))
        for phase in self.pipeline.phases:
            figures.add_row(
                f"triggers of {phase.name}",
                str(sum(1 for (p, _r) in self.claims if p == phase.name)),
            )
        return figures


def run_demo(
    *,
    runs: int = 5,
    seed: int = 7,
    state_dir: str | None = None,
    config: str | os.PathLike[str] | None = None,
    console: Console | None = None,
) -> int:
    """Run the demo; returns the exit code (0 only if every check held).

    ``config`` is a pipeline file to simulate instead of the packaged NBA example; its
    stores and transport are replaced by SQLite files and a log in the state folder.
    """
    console = console or Console()
    if runs < 1:
        console.print("[red]--runs must be at least 1[/red]")
        return 2
    pipeline = demo_pipeline(config)
    temporary = state_dir is None
    state = Path(tempfile.mkdtemp(prefix="phasegate-demo-")) if temporary else Path(str(state_dir))
    state.mkdir(parents=True, exist_ok=True)
    pipeline = dataclasses.replace(
        pipeline,
        stores=StoresConfig(
            primary=f"sqlite:///{state / 'primary.db'}", backup=f"sqlite:///{state / 'backup.db'}"
        ),
        triggers=TriggersConfig(transport=f"log:{state / 'triggers.jsonl'}"),
    )
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    handler = logging.FileHandler(state / "demo.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        console.print(
            f"[bold]phasegate demo[/bold]: {runs} runs of {pipeline.name} "
            f"({len(pipeline.phases)} phases), seed {seed}, state in {state}"
        )
        console.print(
            f"chaos: primary store down {OUTAGE_START:.1f}s–{OUTAGE_START + OUTAGE_SECONDS:.1f}s, "
            f"backup blip of {BLIP_SECONDS * 1000:.0f} ms at {BLIP_START:.1f}s, duplicate, late "
            "and out-of-order reports, one failing processor per run; timings 20x faster than "
            "production"
        )
        ok = Simulation(pipeline, runs, seed, state, console).run()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        handler.close()
        if temporary:
            shutil.rmtree(state, ignore_errors=True)
    console.print("[green]all checks passed[/green]" if ok else "[red]some checks failed[/red]")
    if not temporary:
        console.print(f"stores, triggers.jsonl and demo.log kept in {state}")
    return 0 if ok else 1
