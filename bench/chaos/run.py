"""The whole chaos run: start everything, load it, break it, let it settle, check it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from chaos import verify
from chaos.cluster import BackupSchema, PrivatePostgres
from chaos.faults import Fault, FaultRunner, plan_faults
from chaos.load import LoadStats, drive, plan_reports
from chaos.receivers import SlackReceiver, TriggerReceiver
from chaos.replicas import (
    PHASES,
    PIPELINE_NAME,
    Endpoints,
    Intervals,
    Replica,
    phasegate_command,
    pipeline_text,
)
from phasegate.model import RecordSet
from phasegate.reconcile import FIRST_KEY, LAST_KEY
from phasegate.stores import open_store


@dataclass(frozen=True, slots=True)
class Settings:
    """How big the run is and what breaks in it."""

    completions: int = 100_000
    copies: int = 2
    replicas: int = 3
    primary_outages: int = 4
    kills: int = 3
    receiver_outages: int = 3
    concurrency: int = 48
    batch: int = 50  # reports per POST /v1/completions:batch; 0 sends them one by one
    seed: int = 14
    max_seconds: float = 3600.0
    max_redelivery_share: float = 0.05
    sweep_interval: str = "5s"
    reconcile_interval: str = "30s"
    serial_faults: bool = False
    outage_seconds: tuple[float, float] = (3.0, 8.0)
    receiver_outage_seconds: tuple[float, float] = (5.0, 12.0)
    plan: tuple[Fault, ...] | None = None  # an explicit fault plan instead of a seeded one
    keep: bool = False


@dataclass(slots=True)
class Rig:
    """Everything the run started, so that ``close`` can stop all of it."""

    workdir: Path
    cluster: PrivatePostgres
    backup: BackupSchema
    receiver: TriggerReceiver
    slack: SlackReceiver
    replicas: list[Replica]
    token: str
    endpoints: Endpoints

    def close(self, keep: bool) -> None:
        """Stop every process, the private cluster and the receivers; drop the backup."""
        for replica in self.replicas:
            with contextlib.suppress(Exception):
                replica.kill()
        with contextlib.suppress(Exception):
            self.receiver.close()
        with contextlib.suppress(Exception):
            self.slack.close()
        self.cluster.destroy()
        if not keep:
            self.backup.drop()
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_rig(settings: Settings) -> Rig:
    """The private primary, the backup schema, the receivers and the replicas, running."""
    workdir = Path(tempfile.mkdtemp(prefix="phasegate-chaos-"))
    cluster = PrivatePostgres()
    backup = BackupSchema()
    rig = Rig(workdir, cluster, backup, TriggerReceiver(), SlackReceiver(), [],
              secrets.token_hex(16), Endpoints("", "", "", ""))  # fmt: skip
    try:
        cluster.init()
        cluster.start()
        rig.endpoints = Endpoints(cluster.url, backup.url, rig.receiver.url, rig.slack.url)
        intervals = Intervals(settings.sweep_interval, settings.reconcile_interval)
        rig.replicas = [
            Replica(f"r{i}", workdir, rig.endpoints, rig.token, intervals)
            for i in range(settings.replicas)
        ]
        rig.replicas[0].start()  # first alone: it creates both schemas
        for replica in rig.replicas[1:]:
            replica.launch()
        for replica in rig.replicas[1:]:
            replica.wait_ready()
    except BaseException:
        rig.close(settings.keep)
        raise
    return rig


async def _load_and_break(rig: Rig, settings: Settings, deadline: float) -> tuple[Any, ...]:
    rng = random.Random(settings.seed)
    distinct, sends = plan_reports(settings.completions, settings.copies, rng)
    stats = LoadStats(total=len(sends))
    plan = (
        list(settings.plan)
        if settings.plan is not None
        else plan_faults(
            rng,
            primary_outages=settings.primary_outages,
            kills=settings.kills,
            receiver_outages=settings.receiver_outages,
            replicas=settings.replicas,
            outage_seconds=settings.outage_seconds,
            receiver_outage_seconds=settings.receiver_outage_seconds,
        )
    )
    runner = FaultRunner(
        plan,
        cluster=rig.cluster,
        replicas=rig.replicas,
        receiver=rig.receiver,
        serial=settings.serial_faults,
    )
    reporter = asyncio.create_task(_report_progress(stats, runner))
    await asyncio.gather(
        drive(sends, [r.url for r in rig.replicas], rig.token, stats, seed=settings.seed,
              concurrency=settings.concurrency, batch=settings.batch, deadline=deadline),
        runner.run(lambda: stats.progress),
    )  # fmt: skip
    reporter.cancel()
    return distinct, stats, runner


async def _report_progress(stats: LoadStats, runner: FaultRunner, every: float = 30.0) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(every)
        print(
            f"chaos: {time.monotonic() - started:.0f}s, {stats.sent}/{stats.total} reports "
            f"({stats.acks} acks, {stats.retries} retries), {len(runner.records)}/"
            f"{len(runner.plan)} faults done",
            file=sys.stderr,
            flush=True,
        )


def _backlog(replica: Replica, token: str) -> float:
    response = httpx.get(
        f"{replica.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    for line in response.text.splitlines():
        if line.startswith("phasegate_outbox_backlog "):
            return float(line.split()[1])
    return float("nan")


def alert_outcomes(rig: Rig) -> dict[str, dict[str, float]]:
    """Each running replica's ``phasegate_alerts_total`` by outcome (since its last start)."""
    table: dict[str, dict[str, float]] = {}
    for replica in rig.replicas:
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(
                f"{replica.url}/metrics",
                headers={"Authorization": f"Bearer {rig.token}"},
                timeout=10,
            )
            for line in response.text.splitlines():
                if line.startswith("phasegate_alerts_total{"):
                    outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                    table.setdefault(replica.name, {})[outcome] = float(line.split()[-1])
    return table


def wait_for_quiescence(
    rig: Rig, expected: set[tuple[str, str]], deadline: float, stall: float = 150.0
) -> bool:
    """Until every phase-run reached the receiver and no replica has anything to deliver.

    Gives up at ``deadline``, or after ``stall`` seconds in which nothing new reached the
    receiver (longer than a lease, so a crashed replica's triggers have their chance).
    """
    calm = 0
    seen, moved = -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - moved < stall:
        posts = len(rig.receiver.snapshot())
        if posts != seen:
            seen, moved = posts, time.monotonic()
        backlog = 0.0
        try:
            backlog = sum(_backlog(r, rig.token) for r in rig.replicas)
        except httpx.HTTPError:
            backlog = float("nan")
        done = expected <= rig.receiver.processed_phase_runs()
        calm = calm + 1 if done and backlog == 0 else 0
        if calm >= 3:
            return True
        time.sleep(1.0)
    return False


def reconcile_cli(rig: Rig, *extra: str) -> dict[str, Any]:
    """``phasegate reconcile --format json`` as an operator runs it (alerts to the webhook)."""
    config = rig.workdir / "cli.toml"
    if not config.exists():
        config.write_text(pipeline_text(rig.endpoints, "cli"))
    result = subprocess.run(
        [*phasegate_command(), "reconcile", "--config", str(config), "--format", "json", *extra],
        capture_output=True, text=True, timeout=600, check=False,
        env={**rig.replicas[0].env},
    )  # fmt: skip
    if result.returncode not in {0, 1}:
        raise RuntimeError(f"phasegate reconcile failed ({result.returncode}): {result.stderr}")
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def export(url: str, name: str) -> RecordSet:
    """Everything a store holds."""
    store = open_store(url, pipeline=PIPELINE_NAME, name=name)
    try:
        records: RecordSet = store.export_records(FIRST_KEY, LAST_KEY)
        return records
    finally:
        store.close()


def run_chaos(settings: Settings) -> dict[str, Any]:
    """Run it all; the result document (``passed`` says whether every check held)."""
    started = time.monotonic()
    hard_deadline = started + settings.max_seconds
    rig = start_rig(settings)
    try:
        load_deadline = started + settings.max_seconds * 0.6
        distinct, stats, runner = asyncio.run(_load_and_break(rig, settings, load_deadline))
        loaded = time.monotonic()
        runs = sorted({r.run_key for r in distinct})
        expected = {(phase, run) for run in runs for phase, _ in PHASES}
        quiet = wait_for_quiescence(rig, expected, hard_deadline - 60)
        settled = time.monotonic()
        outcomes = alert_outcomes(rig)
        for replica in rig.replicas:
            replica.terminate()
        for replica in rig.replicas:
            replica.stop()
        repaired = reconcile_cli(rig, "--repair")
        after = reconcile_cli(rig)
        time.sleep(2.5)  # the CLI drained its alerts on exit; let the webhook log them
        primary = export(rig.endpoints.primary, "primary")
        backup = export(rig.endpoints.backup, "backup")
        return build_result(
            settings, rig, stats, runner, distinct, expected,
            (repaired, after), (primary, backup),
            {"load": loaded - started, "quiescence": settled - loaded, "quiet": quiet,
             "total": time.monotonic() - started},
            outcomes,
        )  # fmt: skip
    finally:
        rig.close(settings.keep)


def keep_timeline(rig: Rig, deliveries: list[Any], faults: list[Any]) -> None:
    """With ``--keep``: every delivery the receiver saw, the faults and the kills, one JSON
    object a line (monotonic times), in ``timeline.jsonl`` beside the replicas' logs."""
    path = rig.workdir / "timeline.jsonl"
    with path.open("w") as out:
        for fault in faults:
            out.write(json.dumps({"fault": asdict(fault)}) + "\n")
        for replica in rig.replicas:
            out.write(json.dumps({"kills": {replica.name: replica.kills}}) + "\n")
        for delivery in deliveries:
            out.write(json.dumps({"delivery": asdict(delivery)}) + "\n")
    print(f"chaos: kept {path}", file=sys.stderr)


def build_result(
    settings: Settings,
    rig: Rig,
    stats: LoadStats,
    runner: FaultRunner,
    distinct: list[Any],
    expected: set[tuple[str, str]],
    reconciles: tuple[dict[str, Any], dict[str, Any]],
    stores: tuple[RecordSet, RecordSet],
    timing: dict[str, Any],
    outcomes: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """The result document and its checks."""
    repaired, after = reconciles  # --repair reports what it found before repairing
    primary_ok = verify.stored_successes(stores[0])
    backup_ok = verify.stored_successes(stores[1])
    lost = stats.acknowledged - (primary_ok | backup_ok)
    deliveries = rig.receiver.snapshot()
    if settings.keep:
        keep_timeline(rig, deliveries, runner.records)
    processed = {(d.phase, d.run_key) for d in deliveries if d.processed}
    missed = expected - processed
    claimed_p, delivered_p = verify.stored_triggers(stores[0])
    claimed_b, delivered_b = verify.stored_triggers(stores[1])
    kills = {r.name: r.kills for r in rig.replicas}
    redeliveries = verify.classify_redeliveries(deliveries, kills, runner.records)
    receiver_double = verify.double_claims_seen_by_receiver(deliveries)
    reconcile_double = {d["detail"] for d in repaired["double_claims"]}
    alerts = rig.slack.snapshot()
    injected = {f.kind for f in runner.records}
    classes = verify.alerted_classes(
        alerts,
        injected,
        redeliveries.by_cause.get(verify.CRASHED_REPLICA, 0),
        verify.failed_rounds(deliveries),
    )
    share = redeliveries.total / len(expected) if expected else 0.0
    checks = {
        "every report acknowledged": len(stats.acknowledged) == len(distinct),
        "no report rejected": not stats.rejected,
        "0 lost": not lost,
        "0 missed": not missed,
        "0 double claims": not reconcile_double and not receiver_double,
        "redeliveries explained": redeliveries.by_cause.get(verify.UNEXPLAINED, 0) == 0,
        f"redeliveries under {settings.max_redelivery_share:.0%} of triggers": share
        < settings.max_redelivery_share,
        "stores equal after reconcile": not after["differences"] and not repaired["remaining"],
        "every acknowledged completion in both stores": stats.acknowledged
        <= (primary_ok & backup_ok),
        "every injected failure class alerted": all(c["alerted"] for c in classes.values()),
        "quiescent before the deadline": bool(timing["quiet"]),
    }
    return {
        "seed": settings.seed,
        "settings": asdict(settings),
        "completions": {
            "distinct": len(distinct),
            "run_keys": len({r.run_key for r in distinct}),
            "reports_sent": stats.total,
            "acknowledged": len(stats.acknowledged),
            "acks": stats.acks,
            "client_retries": stats.retries,
            "client_failures": dict(stats.failures),
            "rejected": stats.rejected[:10],
            "gave_up": stats.gave_up,
            "reports_per_second": round(stats.total / stats.seconds, 1) if stats.seconds else 0,
        },
        "lost": len(lost),
        "lost_samples": [str(r) for r in sorted(lost)[:10]],
        "faults": [
            {"kind": r.kind, "target": r.target, "seconds": round(r.ended - r.started, 2)}
            for r in runner.records
        ],
        "faults_by_kind": dict(Counter(r.kind for r in runner.records)),
        "phase_runs": {
            "expected": len(expected),
            "triggered": len(processed & expected),
            "missed": len(missed),
            "missed_samples": [list(m) for m in sorted(missed)[:10]],
            "claimed": {"primary": len(claimed_p), "backup": len(claimed_b)},
            "marked_delivered": {"primary": len(delivered_p), "backup": len(delivered_b)},
        },
        "double_claims": {
            "reconcile": len(reconcile_double),
            "receiver": len(receiver_double),
            "samples": receiver_double[:10] + list(repaired["double_claims"][:10]),
        },
        "deliveries": {
            "posts": len(deliveries),
            "refused_503": sum(1 for d in deliveries if d.status != 200),
            "processed": sum(1 for d in deliveries if d.processed),
            "processed_but_answered_503": sum(
                1 for d in deliveries if d.processed and d.status != 200
            ),
            "by_replica": dict(Counter(d.replica for d in deliveries)),
        },
        "redeliveries": {
            "total": redeliveries.total,
            "share_of_triggers": round(share, 4),
            "by_cause": redeliveries.by_cause,
            "retries_after_refusal": redeliveries.retries_after_refusal,
            "unexplained_samples": list(redeliveries.unexplained_samples),
        },
        "reconcile": {
            "before_repair": repaired["counts"],
            "double_claims": len(repaired["double_claims"]),
            "remaining_after_repair": len(repaired["remaining"]),
            "differences_after": len(after["differences"]),
        },
        "stores_equal_after_reconcile": checks["stores equal after reconcile"],
        "completions_missing_after_reconcile": {
            "primary": len(stats.acknowledged - primary_ok),
            "backup": len(stats.acknowledged - backup_ok),
        },
        "alerts": {
            "total": len(alerts),
            "by_kind": rig.slack.counts(),
            "by_sender": dict(Counter(a.sender for a in alerts)),
            "outcomes_per_replica_since_start": outcomes,
            "injected_classes": classes,
        },
        "seconds": {k: round(v, 1) for k, v in timing.items() if k != "quiet"},
        "checks": checks,
        "passed": all(checks.values()),
    }
