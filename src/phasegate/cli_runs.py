"""``phasegate rerun`` and ``phasegate backfill``: thin shells over reruns and backfills."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from phasegate.backfill import Backfill, BackfillItem, days_between, parse_rate, read_run_keys
from phasegate.errors import BothStoresFailed, ValidationError
from phasegate.model import Trigger
from phasegate.runtime import Runtime

EXIT_OK, EXIT_REJECTED, EXIT_STORES_DOWN = 0, 1, 3

Opener = Callable[[argparse.Namespace], Runtime]
Adder = Callable[..., argparse.ArgumentParser]


def register(add: Adder, opener: Opener, *parents: argparse.ArgumentParser) -> None:
    """Add ``rerun`` and ``backfill`` to the CLI; ``add`` is ``cli.main``'s helper."""

    def rerun_command(args: argparse.Namespace) -> int:
        return cmd_rerun(args, opener(args))

    def backfill_command(args: argparse.Namespace) -> int:
        return cmd_backfill(args, opener(args))

    rerun = add(
        "rerun",
        rerun_command,
        "start attempt N+1 of a phase and everything downstream for a run key",
        *parents,
    )
    rerun.add_argument("--run-key", required=True)
    rerun.add_argument("--phase", required=True)
    backfill = add(
        "backfill",
        backfill_command,
        "send a phase's start signal for every run key of a range, once each",
        *parents,
    )
    backfill.add_argument("--phase", required=True)
    backfill.add_argument("--from", dest="first", metavar="DATE", help="first day (YYYY-MM-DD)")
    backfill.add_argument("--to", dest="last", metavar="DATE", help="last day, included")
    backfill.add_argument("--keys", metavar="FILE", help="run keys, one per line (not dates)")
    backfill.add_argument(
        "--rate", help="at most this many signals, e.g. 5/s, 30/m (default: no limit)"
    )


def _deliver(runtime: Runtime) -> Callable[[Trigger], str]:
    def deliver(trigger: Trigger) -> str:
        report = runtime.dispatcher.run_once(only={trigger.trigger_id})
        return "delivered" if report.ok else f"pending ({report.failed[0][1]})"

    return deliver


def cmd_rerun(args: argparse.Namespace, runtime: Runtime) -> int:
    """Rerun a phase for a run key and deliver its start signal."""
    try:
        try:
            result = runtime.orchestrator.rerun(args.phase, args.run_key)
        except ValidationError as exc:
            print(f"rejected: {exc}", file=sys.stderr)
            return EXIT_REJECTED
        except BothStoresFailed as exc:
            print(f"not rerun: {exc}", file=sys.stderr)
            return EXIT_STORES_DOWN
        signal = result.trigger
        delivery = _deliver(runtime)(signal) if result.claimed else None
        if args.format == "json":
            print(
                json.dumps(
                    {
                        "trigger_id": signal.trigger_id,
                        "phase": signal.phase,
                        "run_key": signal.run_key,
                        "attempt": signal.attempt,
                        "claimed": result.claimed,
                        "deferred": result.deferred,
                        "delivery": delivery,
                    },
                    indent=2,
                )
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


def cmd_backfill(args: argparse.Namespace, runtime: Runtime) -> int:
    """Send the start signal of a phase for each run key of a range or a file."""
    try:
        try:
            keys = _run_keys(args)
            rate = parse_rate(args.rate) if args.rate else None
            deliver = _deliver(runtime)
            with _progress(args.format == "text" and sys.stdout.isatty(), len(keys)) as advance:
                backfill = Backfill(
                    runtime.orchestrator,
                    args.phase,
                    keys,
                    rate=rate,
                    deliver=deliver,
                    progress=advance if args.format == "text" else None,
                )
                report = backfill.run()
        except ValidationError as exc:
            print(f"rejected: {exc}", file=sys.stderr)
            return EXIT_REJECTED
        except BothStoresFailed as exc:
            print(f"stopped: {exc}; run the same backfill again to resume", file=sys.stderr)
            return EXIT_STORES_DOWN
        if args.format == "json":
            print(json.dumps(report.to_dict(), indent=2))
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
