"""CPU per report, by thread, under the library single-report load: phasegate against
the thinnest durable dual write (thin.py), alternating, from each thread's own CPU clock
(``pthread_getcpuclockid``: POSIX).

    .venv/bin/python bench/cpu_split.py [--reports 6000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_ingest import PROCESSORS, runtime_in
from thin import DualWrite


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Each live thread of this process: its name and CPU seconds (its own CPU clock)."""
    found = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            found[thread.ident] = (thread.name, time.clock_gettime(clock))
        except OSError:
            continue  # the thread ended
    return found


def role(name: str) -> str:
    if "ThreadPoolExecutor" in name:
        return "producers"
    if "writer" in name or "_loop" in name:
        return "writers"
    return "other"


def split(kind: str, directory: Path, reports: int) -> tuple[float, dict[str, float]]:
    """Reports per second and µs of CPU per report by role, for one round of ``kind``."""
    jobs = [(f"r{1 + i // 10}", PROCESSORS[i % 10]) for i in range(reports)]
    record: Callable[[tuple[str, str]], object]
    if kind == "thin":
        writes = DualWrite(directory)
        writes.record("a", "r0", "p0")
        record, close = (lambda job: writes.record("a", *job)), writes.close
    else:
        directory.mkdir()
        runtime = runtime_in(directory)
        orchestrator = runtime.orchestrator
        orchestrator.handle_completion("a", "r0", "p0")
        record, close = (lambda job: orchestrator.handle_completion("a", *job)), runtime.close
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: None, range(64)))  # the producer threads exist before
        before = thread_cpu()
        started = time.perf_counter()
        list(pool.map(record, jobs))
        elapsed = time.perf_counter() - started
        after = thread_cpu()
    close()
    per_role: dict[str, float] = defaultdict(float)
    for ident, (name, seconds) in after.items():
        per_role[role(name)] += seconds - before.get(ident, (name, 0.0))[1]
    return reports / elapsed, {k: round(1e6 * v / reports) for k, v in per_role.items()}


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=positive, default=6000, help="reports per round")
    parser.add_argument("--rounds", type=positive, default=2, help="rounds of each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        for index in range(args.rounds):
            for kind in ("phasegate", "thin"):
                rate, cpu = split(kind, Path(name) / f"{kind}-{index}", args.reports)
                print(f"{kind:9} {rate:6.0f}/s  CPU µs per report: {dict(cpu)}", flush=True)


if __name__ == "__main__":
    main()
