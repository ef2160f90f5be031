"""``make bench``: every benchmark, one table, and bench/results/latest.json.

Each figure is a median of several runs next to a baseline measured in the same run.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_audit
import bench_celery
import bench_drift
import bench_gcp
import bench_http
import bench_ingest
import bench_scale
import bench_service
from common import machine


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def workers_row(workers: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    if "skipped" in workers:
        return ("2c serve --workers 2, PG", "skipped", workers["skipped"], "", "≥ 1.5x", "skipped")
    return (
        "2c serve --workers 2, PG",
        f"{workers['two_rps']:.0f} req/s",
        f"1 worker {workers['one_rps']:.0f} req/s",
        f"{workers['ratio']:.2f}x",
        "≥ 1.5x",
        verdict(workers["ratio"] >= 1.5)
        + (
            f" (this machine's ceiling: {workers['ceiling_ratio']:.2f}x)"
            if "ceiling_ratio" in workers
            else ""
        ),
    )


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def main() -> int:
    logging.disable(logging.WARNING)  # claims racing on purpose log warnings; not news here
    started = time.monotonic()
    load_before = load_average()
    figures: dict[str, Any] = {}
    for name, module in [
        ("ingest", bench_ingest),
        ("http", bench_http),
        ("service", bench_service),
        ("celery", bench_celery),
        ("scale", bench_scale),
        ("drift", bench_drift),
        ("audit", bench_audit),
    ]:
        print(f"== {name}", flush=True)
        figures[name] = module.main()
    print("== gcp", flush=True)
    try:
        figures["gcp"] = bench_gcp.main([])
    except (bench_gcp.EmulatorMissing, RuntimeError) as exc:
        figures["gcp"] = {"skipped": str(exc)[:200]}
    ingest, http, celery, scale, service = (
        figures["ingest"],
        figures["http"],
        figures["celery"],
        figures["scale"],
        figures["service"],
    )
    rows = [
        (
            "1 ingest, library, embedded",
            f"{ingest['phasegate_completions_per_s']:.0f}/s",
            f"raw 1-row txn {ingest['raw_single_row_txn_per_s']:.0f}/s; thinnest dual write "
            f"{ingest['thin_completions_per_s']:.0f}/s ({ingest['thin_ratio']:.2f}x)",
            f"{ingest['ratio']:.2f}x",
            "≥ 1.5x",
            verdict(ingest["ratio"] >= 1.5) + f" ({ingest['of_thin']:.0%} of the thinnest)",
        ),
        (
            "1b batch ingest, library (100/call)",
            f"{ingest['batch_completions_per_s']:.0f}/s",
            f"raw 1-row txn {ingest['raw_single_row_txn_per_s']:.0f}/s; thinnest dual write "
            f"{ingest['thin_batch_completions_per_s']:.0f}/s ({ingest['thin_batch_ratio']:.2f}x), "
            f"claiming too {ingest['thin_claims_batch_completions_per_s']:.0f}/s "
            f"({ingest['thin_claims_batch_ratio']:.2f}x)",
            f"{ingest['batch_ratio']:.2f}x",
            "≥ 5x",
            verdict(ingest["batch_ratio"] >= 5)
            + f" ({ingest['batch_of_thin_claims']:.0%} of the thinnest that claims; claims take "
            f"{ingest['claims_share_of_batch_time']:.0%}: "
            f"{ingest['unclaimed_batch_ratio']:.2f}x claiming nothing)",
        ),
        (
            "2 ingest, HTTP",
            f"{http['http_ingest']['phasegate_rps']:.0f} req/s",
            f"bare FastAPI {http['http_ingest']['bare_rps']:.0f} req/s; with the thinnest dual "
            f"write {http['http_ingest']['thin_rps']:.0f} req/s "
            f"({http['http_ingest']['thin_ratio']:.2f}x)",
            f"{http['http_ingest']['ratio']:.2f}x",
            "≥ 0.5x",
            verdict(http["http_ingest"]["ratio"] >= 0.5)
            + f" ({http['http_ingest']['of_thin']:.0%} of the thinnest)",
        ),
        (
            "2b batch ingest, HTTP (100/request)",
            f"{service['batch']['completions_per_s']:.0f}/s",
            f"thinnest dual write {service['batch']['thin_completions_per_s']:.0f}/s",
            "",
            "≥ 20,000/s",
            verdict(service["batch"]["completions_per_s"] >= 20_000)
            + f" ({service['batch']['of_thin']:.0%} of the thinnest)",
        ),
        workers_row(service["workers"]),
        (
            "3 trigger latency",
            f"p50 {http['trigger_latency']['p50_ms']:.1f} ms, p99 {http['trigger_latency']['p99_ms']:.1f} ms",
            "",
            "",
            "p99 ≤ 10 ms",
            verdict(http["trigger_latency"]["p99_ms"] <= 10),
        ),
        (
            "4 health storm (2,000)",
            f"p99 {http['health_storm']['p99_ms']:.0f} ms",
            f"checks {http['health_storm']['checks']}",
            "",
            "1 check each",
            verdict(all(v == 1 for v in http["health_storm"]["checks"].values())),
        ),
    ]
    if "skipped" in celery:
        rows.append(("5 vs Celery chord", "skipped", celery["skipped"], "", "≥ 5x", "skipped"))
    else:
        rows.append(
            (
                "5 vs Celery chord",
                f"SQLite {celery['phasegate_sqlite_completions_per_s']:.0f}/s, PG {celery.get('phasegate_postgres_completions_per_s', 0):.0f}/s",
                f"Celery {celery['celery_completions_per_s']:.0f}/s",
                f"{celery['ratio_sqlite']:.2f}x / {celery.get('ratio_postgres', 0):.2f}x",
                "≥ 5x / ≥ 3x",
                verdict(celery["ratio_sqlite"] >= 5 and celery.get("ratio_postgres", 0) >= 3),
            )
        )
    rows.append(
        (
            "6 scale (1k/10k/100k runs)",
            f"{scale['1000']:.0f} / {scale['10000']:.0f} / {scale['100000']:.0f} /s",
            "",
            f"{scale['ratio_100k_to_1k']:.2f}x",
            "≥ 0.9x",
            verdict(scale["ratio_100k_to_1k"] >= 0.9),
        )
    )
    memory = service["memory"]
    rows.append(
        (
            "7 service RSS after 100k",
            f"{memory['rss_mb_after']:.0f} MB",
            f"at start {memory['rss_mb_start']:.0f} MB",
            "",
            "< 200 MB",
            verdict(memory["rss_mb_after"] < 200),
        )
    )
    rows.append(
        (
            "drift: 50 services, 5k commits",
            f"{figures['drift']['drift_s'] * 1000:.0f} ms",
            f"git log {figures['drift']['git_log_s'] * 1000:.0f} ms",
            f"{figures['drift']['ratio']:.1f}x",
            "< 2 s",
            verdict(figures["drift"]["drift_s"] < 2),
        )
    )
    rows.append(
        (
            "audit: 200 files",
            f"{figures['audit']['audit_s'] * 1000:.0f} ms",
            f"parse only {figures['audit']['parse_only_s'] * 1000:.0f} ms",
            f"{figures['audit']['ratio']:.1f}x",
            "< 2 s",
            verdict(figures["audit"]["audit_s"] < 2),
        )
    )
    gcp = figures["gcp"]
    if "skipped" in gcp:
        rows.append(
            (
                "7 Firestore + BigQuery (emulators)",
                "skipped",
                gcp["skipped"],
                "",
                "reported",
                "skipped",
            )
        )
    else:
        dual, sqlite = gcp["dual-write fs+bq (runtime)"], gcp["sqlite"]
        postgres = gcp.get("postgresql", {}).get("batch_100_per_s", 0)
        rows.append(
            (
                "7 Firestore + BigQuery (emulators), 100/call",
                f"fs {gcp['firestore (emulator)']['batch_100_per_s']:.0f}/s, bq {gcp['bigquery (emulator)']['batch_100_per_s']:.0f}/s, dual-write {dual['batch_100_per_s']:.0f}/s (single {dual['single_per_s']:.0f}/s)",
                f"SQLite {sqlite['batch_100_per_s']:.0f}/s, PG {postgres:.0f}/s",
                f"{dual['batch_100_per_s'] / sqlite['batch_100_per_s']:.3f}x",
                "reported",
                "reported",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(6)]
    header = ("benchmark", "phasegate", "baseline", "ratio", "target", "")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {load_average()}")
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "load_average_1_5_15": {"before": load_before, "after": load_average()},
        "figures": figures,
        "table": [dict(zip((*header[:5], "verdict"), row, strict=True)) for row in rows],
    }
    out = Path(__file__).resolve().parent / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(
        f"\nwritten {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out} in {result['elapsed_s']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
