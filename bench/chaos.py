"""``make chaos``: three phasegate replicas under load while their primary, the replicas
themselves and the trigger receiver fail; then checks that nothing was lost, missed or
claimed twice, and that every failure was alerted.

    .venv/bin/python bench/chaos.py                      # 100,000 completions, seed 14
    .venv/bin/python bench/chaos.py --completions 5000 --seed 3 --max-seconds 600

Needs PostgreSQL's ``initdb``/``pg_ctl`` (the primary runs in a private cluster in a temp
dir) and the shared PostgreSQL on 127.0.0.1:5432 (the backup, in a fresh schema).
Prints the result and writes ``bench/results/chaos.json``; exits 0 only if every check
held.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos.run import Settings, run_chaos

RESULTS = Path(__file__).resolve().parent / "results" / "chaos.json"


def parse(argv: list[str]) -> tuple[Settings, Path]:
    """The settings the command line asks for, and where to write the result."""
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--completions", type=int, default=defaults.completions)
    parser.add_argument("--copies", type=int, default=defaults.copies, help="sends per report")
    parser.add_argument("--replicas", type=int, default=defaults.replicas)
    parser.add_argument("--primary-outages", type=int, default=defaults.primary_outages)
    parser.add_argument("--kills", type=int, default=defaults.kills, help="replica SIGKILLs")
    parser.add_argument("--receiver-outages", type=int, default=defaults.receiver_outages)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument(
        "--batch", type=int, default=defaults.batch, help="reports per batch; 0: one by one"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    parser.add_argument("--sweep-interval", default=defaults.sweep_interval)
    parser.add_argument("--reconcile-interval", default=defaults.reconcile_interval)
    parser.add_argument("--keep", action="store_true", help="keep the backup schema and logs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    return Settings(
        completions=args.completions, copies=args.copies, replicas=args.replicas,
        primary_outages=args.primary_outages, kills=args.kills,
        receiver_outages=args.receiver_outages, concurrency=args.concurrency,
        batch=args.batch, seed=args.seed, max_seconds=args.max_seconds, keep=args.keep, sweep_interval=args.sweep_interval,
        reconcile_interval=args.reconcile_interval,
    ), args.output  # fmt: skip


def main(argv: list[str]) -> int:
    """Run, print, write the JSON; 0 only when every check held."""
    settings, output = parse(argv)
    # Started in the background, a shell ignores SIGINT for us: make both signals unwind
    # through run_chaos's cleanup (replicas, the private cluster, the backup schema).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run_chaos(settings)
    result["command"] = "python bench/chaos.py " + " ".join(argv)
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    print(json.dumps({k: result[k] for k in result if k != "settings"}, indent=2))
    for name, ok in result["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print("all checks passed" if result["passed"] else "SOME CHECKS FAILED")
    print(f"written to {output}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
