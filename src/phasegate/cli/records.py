"""Commands over the records: complete, dispatch, trigger, status, check-timeouts, summary."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from phasegate.cli.common import (
    EXIT_OK,
    EXIT_REJECTED,
    Adder,
    clock_of,
    emit_json,
    load,
    open_for,
)
from phasegate.errors import (
    BothStoresFailed,
    ConfigError,
    UsageError,
    ValidationError,
    describe_error,
)
from phasegate.orchestrator import PhaseStatus
from phasegate.recording import Delivery, Recorded
from phasegate.results import BatchItem

_STATE_MARKS = {
    "not_started": "·",
    "waiting": "…",
    "complete": "✓",
    "triggered": "→",
    "timed_out": "✗",
}


# -- complete -------------------------------------------------------------------------------


def cmd_complete(args: argparse.Namespace) -> int:
    """Record one completion (or every report of ``--from-file``); deliver the triggers
    they caused before exiting."""
    if args.from_file is not None:
        given = [f"--{n.replace('_', '-')}" for n in _ONE_REPORT if getattr(args, n) is not None]
        if given:
            raise UsageError(
                f"--from-file takes the reports from the file; drop {', '.join(given)}"
            )
        return _complete_from_file(args)
    missing = [f"--{n.replace('_', '-')}" for n in _REQUIRED if getattr(args, n) is None]
    if missing:
        raise UsageError(f"complete needs {', '.join(missing)} (or --from-file FILE)")
    metadata: Any = None
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except (ValueError, RecursionError) as exc:
            raise ValidationError(
                "metadata", f"not valid JSON: {_json_error(exc)}", code="malformed_json"
            ) from None
    runtime = open_for(args)
    try:
        recorded = runtime.record(
            args.phase,
            args.run_key,
            args.processor,
            status=args.status or "success",
            correlation_id=args.correlation_id,
            metadata=metadata,
        )
        if args.format == "json":
            emit_json(recorded.to_dict())
        else:
            _print_recorded(args, recorded)
        return EXIT_OK
    finally:
        runtime.close()


_REQUIRED = ("phase", "run_key", "processor")
_ONE_REPORT = (*_REQUIRED, "status", "metadata", "correlation_id")
FILE_BATCH = 1000  # reports per batch, as POST /v1/completions:batch takes at most


def _json_error(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def _read_lines(source: str) -> list[tuple[int, object]]:
    """``(line number, decoded report)`` of each non-blank line of a JSON Lines file
    (``-``: standard input); a line that is not UTF-8 JSON carries its ValidationError.

    Lines end at ``\n`` only (a ``\r`` before it is white space to JSON): U+2028 and the
    like may stand inside a JSON string. A UTF-8 byte order mark at the start is skipped."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"--from-file {source}: cannot read it: {exc}") from None
    lines: list[tuple[int, object]] = []
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            error = ValidationError("line", f"not valid UTF-8: {exc}", code="malformed_json")
            lines.append((number, error))
            continue
        if not line.strip():
            continue
        try:
            lines.append((number, json.loads(line)))
        except (ValueError, RecursionError) as exc:
            message = f"not valid JSON: {_json_error(exc)}"
            lines.append((number, ValidationError("line", message, code="malformed_json")))
    return lines


def _complete_from_file(args: argparse.Namespace) -> int:
    """Record a JSON Lines file of reports in batches of 1,000, each line answered on
    its own; deliver what they triggered. Exit 1 when any line was rejected (the others
    are recorded all the same); exit 3 when both stores failed, naming the first line
    not recorded (what came before it was recorded, and its triggers delivered)."""
    lines = _read_lines(args.from_file)
    answers: dict[int, BatchItem] = {}
    deliveries: dict[str, Delivery] = {}
    good = [(n, body) for n, body in lines if not isinstance(body, ValidationError)]
    failed: tuple[int, BothStoresFailed] | None = None
    runtime = open_for(args)
    try:
        for start in range(0, len(good), FILE_BATCH):
            chunk = good[start : start + FILE_BATCH]
            try:
                batch = runtime.record_reports([body for _, body in chunk])
            except BothStoresFailed as exc:
                failed = (start, exc)
                break
            deliveries.update(batch.deliveries)
            for (number, _), item in zip(chunk, batch.items, strict=True):
                answers[number] = dataclasses.replace(item, index=number)
    finally:
        runtime.close()
    if failed is not None and not answers:
        raise failed[1]
    for number, body in lines:
        if isinstance(body, ValidationError):
            answers[number] = BatchItem(number, error=body)
    unrecorded = [number for number, _ in good[failed[0] :]] if failed else []
    _print_file_results(args, answers, unrecorded, deliveries)
    if failed is not None:
        info = describe_error(failed[1], runtime.scrubber.scrub)
        print(
            f"{info.cli_line}; lines {unrecorded[0]} to {unrecorded[-1]} ({len(unrecorded)} "
            "report(s)) were not recorded: report them again later (the lines before were "
            "recorded; sending those again is harmless)",
            file=sys.stderr,
        )
        return info.exit_code
    return EXIT_REJECTED if any(not a.ok for a in answers.values()) else EXIT_OK


def _print_file_results(
    args: argparse.Namespace,
    answers: dict[int, BatchItem],
    unrecorded: list[int],
    deliveries: dict[str, Delivery],
) -> None:
    ordered = [answers[number] for number in sorted(answers)]
    rejected = [a for a in ordered if not a.ok]
    total = len(ordered) + len(unrecorded)
    if args.format == "json":
        emit_json(
            {
                "recorded": len(ordered) - len(rejected),
                "rejected": len(rejected),
                "not_recorded": unrecorded,
                "results": [
                    {"line": a.index, **{k: v for k, v in a.to_dict().items() if k != "index"}}
                    for a in ordered
                ],
                "deliveries": {tid: d.describe() for tid, d in sorted(deliveries.items())},
            }
        )
        return
    for item in rejected:
        assert item.error is not None
        print(f"rejected line {item.index}: {item.error.field}: {item.error.message}")
    print(f"recorded {len(ordered) - len(rejected)} of {total} report(s)")
    for trigger_id, delivery in sorted(deliveries.items()):
        print(f"  trigger {trigger_id} {delivery.describe()}")


def _print_recorded(args: argparse.Namespace, recorded: Recorded) -> None:
    result = recorded.result
    stores = ", ".join(
        f"{name} {'ok' if ok else 'FAILED'}"
        for name, ok in (("primary", result.primary_ok), ("backup", result.backup_ok))
    )
    print(f"recorded {args.phase}/{args.processor} {args.status or 'success'} for {args.run_key}")
    print(f"  stores: {stores}")
    if result.claimed:
        delivery = recorded.delivery.describe() if recorded.delivery else "pending"
        print(f"phase {args.phase} complete: trigger {result.trigger_id} {delivery}")
    elif result.deferred:
        print(f"phase {args.phase} complete: trigger deferred until a store can decide")
    elif result.phase_complete:
        print(f"phase {args.phase} was already triggered ({result.trigger_id})")


# -- dispatch and trigger -------------------------------------------------------------------


def cmd_dispatch(args: argparse.Namespace) -> int:
    """Deliver every pending trigger now; exit 1 if any is still pending."""
    runtime = open_for(args)
    try:
        report = runtime.dispatcher.run_once(include_deferred=True)
        if args.format == "json":
            emit_json(
                {
                    "delivered": list(report.delivered),
                    "failed": [{"trigger_id": t, "error": e} for t, e in report.failed],
                    "unfinished": report.unfinished,
                }
            )
        else:
            for trigger_id in report.delivered:
                print(f"delivered {trigger_id}")
            for trigger_id, error in report.failed:
                print(f"still pending {trigger_id}: {error}")
            print(f"{len(report.delivered)} delivered, {len(report.failed)} still pending")
            if report.unfinished is not None:
                print(f"stopped early: {report.unfinished}; others may still be pending")
        return EXIT_OK if report.ok else EXIT_REJECTED
    finally:
        runtime.close()


def cmd_trigger(args: argparse.Namespace) -> int:
    """Manual override: trigger a phase now (reason ``manual``), still at most once."""
    runtime = open_for(args)
    try:
        triggered = runtime.trigger(args.phase, args.run_key)
        result = triggered.result
        if args.format == "json":
            emit_json(triggered.to_dict())
        elif result.claimed:
            delivery = triggered.delivery.describe() if triggered.delivery else "pending"
            print(
                f"triggered {args.phase} for {args.run_key}: {result.trigger.trigger_id} {delivery}"
            )
        elif result.deferred:
            print("deferred: no store can decide the claim safely right now; try again")
        else:
            print(
                f"{args.phase} for {args.run_key} was already triggered "
                f"({result.trigger.trigger_id}, reason {result.trigger.reason.value})"
            )
        return EXIT_OK
    finally:
        runtime.close()


# -- status ---------------------------------------------------------------------------------


def _print_run(run_key: str, statuses: list[PhaseStatus]) -> None:
    print(f"run {run_key}")
    for status in statuses:
        mark = _STATE_MARKS[status.state.value]
        done = f"{len(status.succeeded)}/{len(status.expected)}"
        line = f"  {mark} {status.phase:<12} {status.state.value:<12} {done:>5}"
        if status.trigger is not None:
            delivered = "delivered" if status.trigger.delivered else "pending delivery"
            line += f"  trigger {status.trigger.trigger.trigger_id} ({delivered})"
        elif status.missing and status.state.value != "not_started":
            line += f"  missing: {', '.join(status.missing)}"
        if status.failed:
            line += f"  failed: {', '.join(status.failed)}"
        print(line)


def cmd_status(args: argparse.Namespace) -> int:
    """Each phase's state for one run, or for the most recent runs."""
    runtime = open_for(args)
    try:
        orchestrator = runtime.orchestrator
        run_keys = [args.run_key] if args.run_key else orchestrator.list_runs(args.limit)
        runs = {key: orchestrator.run_status(key) for key in run_keys}
        if args.format == "json":
            emit_json(
                {
                    "pipeline": runtime.pipeline.name,
                    "runs": [
                        {"run_key": key, "phases": [s.to_dict() for s in statuses]}
                        for key, statuses in runs.items()
                    ],
                }
            )
        elif not runs:
            print("no runs recorded yet")
        else:
            for key, statuses in runs.items():
                _print_run(key, statuses)
        return EXIT_OK
    finally:
        runtime.close()


# -- check-timeouts -------------------------------------------------------------------------


def cmd_check_timeouts(args: argparse.Namespace) -> int:
    """One timeout pass; also claims complete phases left untriggered. Exit 1 if any timed out."""
    runtime = open_for(args)
    try:
        # A one-shot pass remembers nothing between runs: it takes a whole rolling turn.
        maintenance = runtime.maintain(args.runs, rolling_steps=None)
        if args.format == "json":
            emit_json(maintenance.to_dict())
        else:
            print(maintenance.to_text())
        return EXIT_REJECTED if maintenance.findings else EXIT_OK
    finally:
        runtime.close()


# -- summary --------------------------------------------------------------------------------


def cmd_summary(args: argparse.Namespace) -> int:
    """Print (and with --send, post to Slack) the summary of one run."""
    from phasegate.summary import send_summary, summarise_run  # noqa: PLC0415

    pipeline = load(args)
    if args.send and pipeline.alerts.slack is None:
        raise ConfigError("--send needs [alerts.slack] webhook_url")
    runtime = open_for(args, pipeline)
    try:
        summary = summarise_run(runtime.orchestrator, args.run_key)
        if args.format == "json":
            emit_json(summary.to_dict())
        else:
            print(summary.to_text())
        if args.send and pipeline.alerts.slack is not None:
            send_summary(
                summary,
                pipeline.alerts.slack,
                scrubber=runtime.scrubber,
                sleep=clock_of(args).sleep,
            )
            print("summary sent to Slack", file=sys.stderr)
        return EXIT_OK
    finally:
        runtime.close()


# -- parsers --------------------------------------------------------------------------------


def register(add: Adder, common: argparse.ArgumentParser, output: argparse.ArgumentParser) -> None:
    """Add this group's subcommands."""
    complete = add(
        "complete",
        cmd_complete,
        "record a processor's completion (or a file of them)",
        common,
        output,
    )
    complete.add_argument("--phase")
    complete.add_argument("--run-key")
    complete.add_argument("--processor")
    complete.add_argument("--status", help="success (default) or failed")
    complete.add_argument("--metadata", help="a JSON object, at most 16 KiB")
    complete.add_argument("--correlation-id")
    complete.add_argument(
        "--from-file",
        metavar="FILE",
        help="record the reports of a JSON Lines file (one report object a line, as "
        "POST /v1/completions takes it; - for standard input), each answered on its own",
    )

    add("dispatch", cmd_dispatch, "deliver pending triggers and exit", common, output)

    trigger = add(
        "trigger", cmd_trigger, "trigger a phase now (manual override, still once)", common, output
    )
    trigger.add_argument("--phase", required=True)
    trigger.add_argument("--run-key", required=True)

    status = add("status", cmd_status, "show each phase's state for a run", common, output)
    status.add_argument("run_key", nargs="?", metavar="RUN_KEY")
    status.add_argument("--limit", type=int, default=10, help="recent runs to show (default 10)")

    summary = add(
        "summary", cmd_summary, "summarise a run; --send posts it to Slack", common, output
    )
    summary.add_argument("--run-key", required=True)
    summary.add_argument("--send", action="store_true", help="also post it to [alerts.slack]")

    timeouts = add(
        "check-timeouts",
        cmd_check_timeouts,
        "report phases past their timeout (one pass)",
        common,
        output,
    )
    timeouts.add_argument("--runs", type=int, default=50, help="recent runs to check (default 50)")
