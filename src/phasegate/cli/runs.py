"""``phasegate rerun`` and ``phasegate backfill``: thin shells over reruns and backfills."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from phasegate.backfill import Backfill, BackfillItem, days_between, parse_rate, read_run_keys
from phasegate.cli.common import EXIT_OK, EXIT_REJECTED, Adder, emit_json, open_for
from phasegate.errors import ValidationError
from phasegate.model import Trigger
from phasegate.runtime import Runtime


def register(add: Adder, common: argparse.ArgumentParser, output: argparse.ArgumentParser) -> None:
    """Add this group's subcommands."""
    rerun = add(
        "rerun",
        cmd_rerun,
        "start attempt N+1 of a phase and everything downstream for a run key",
        common,
        output,
    )
    rerun.add_argument("--run-key", required=True)
    rerun.add_argument("--phase", required=True)
    backfill = add(
        "backfill",
        cmd_backfill,
        "send a phase's start signal for every run key of a range, once each",
        common,
        output,
    )
    backfill.add_argument("--phase", required=True)
    backfill.add_argument("--from", dest="first", metavar="DATE", help="first day (YYYY-MM-DD)")
    backfill.add_argument("--to", dest="last", metavar="DATE", help="last day, included")
    backfill.add_argument("--keys", metavar="FILE", help="run keys, one per line (not dates)")
    backfill.add_argument(
        "--rate", help="at most this many signals, e.g. 5/s, 30/m (default: no limit)"
    )


def cmd_rerun(args: argparse.Namespace) -> int:
    """Rerun a phase for a run key and deliver its start signal."""
    return rerun_with(args, open_for(args))


def cmd_backfill(args: argparse.Namespace) -> int:
    """Send the start signal of a phase for each run key of a range or a file."""
    return backfill_with(args, open_for(args))


def _deliver(runtime: Runtime) -> Callable[[Trigger], str]:
    def deliver(trigger: Trigger) -> str:
        return runtime.deliver([trigger.trigger_id])[trigger.trigger_id].describe()

    return deliver


def rerun_with(args: argparse.Namespace, runtime: Runtime) -> int:
    """``phasegate rerun`` on an open runtime (closed before returning)."""
    try:
        result = runtime.orchestrator.rerun(args.phase, args.run_key)
        signal = result.trigger
        delivery = _deliver(runtime)(signal) if result.claimed else None
        if args.format == "json":
            emit_json(
                {
                    "trigger_id": signal.trigger_id,
                    "phase": signal.phase,
                    "run_key": signal.run_key,
                    "attempt": signal.attempt,
                    "claimed": result.claimed,
                    "deferred": result.deferred,
                    "delivery": delivery,
                }
            )
        elif result.deferred:
            print("deferred: no store can decide the claim safely right now; ask again later")
        elif result.claimed:
            print(
                f"rerun of {signal.phase} for {signal.run_key}: attempt {signal.attempt}, "
                f"start signal {signal.trigger_id} {delivery}"
            )
        else:
            print(
                f"attempt {signal.attempt} of {signal.phase} for {signal.run_key} was already "
                f"started by this rerun ({signal.trigger_id}) and has not triggered yet"
            )
        return EXIT_REJECTED if result.deferred else EXIT_OK
    finally:
        runtime.close()


def backfill_with(args: argparse.Namespace, runtime: Runtime) -> int:
    """``phasegate backfill`` on an open runtime (closed before returning)."""
    try:
        keys = _run_keys(args)
        rate = parse_rate(args.rate) if args.rate else None
        with _progress(args.format == "text" and sys.stdout.isatty(), len(keys)) as advance:
            report = Backfill(
                runtime.orchestrator,
                args.phase,
                keys,
                rate=rate,
                deliver=_deliver(runtime),
                progress=advance if args.format == "text" else None,
            ).run()
        if args.format == "json":
            emit_json(report.to_dict())
        else:
            counts = report.to_dict()
            print(
                f"backfill of {report.phase}: {counts['run_keys']} run keys, "
                f"{counts['emitted']} started now, {counts['already_emitted']} started by an "
                f"earlier backfill, {counts['already_started']} already running, "
                f"{counts['deferred']} deferred"
            )
        return EXIT_OK if report.complete else EXIT_REJECTED
    finally:
        runtime.close()


def _run_keys(args: argparse.Namespace) -> list[str]:
    if args.keys:
        if args.first or args.last:
            raise ValidationError("keys", "give either --keys FILE or --from/--to, not both")
        return read_run_keys(args.keys)
    if not (args.first and args.last):
        raise ValidationError("from", "give --from DATE and --to DATE, or --keys FILE")
    return days_between(args.first, args.last)


@contextmanager
def _progress(bar: bool, total: int) -> Iterator[Callable[[BackfillItem], None]]:
    """A rich progress bar on a terminal; elsewhere, one line per run key."""
    if not bar:

        def line(item: BackfillItem) -> None:
            print(f"{item.run_key}  {item.outcome.value}  {item.trigger_id or ''}".rstrip())

        yield line
        return
    from rich.progress import Progress  # noqa: PLC0415 - only a terminal needs it

    with Progress() as progress:
        task = progress.add_task("backfill", total=total)

        def advance(item: BackfillItem) -> None:
            progress.update(task, advance=1, description=f"{item.run_key} {item.outcome.value}")

        yield advance
