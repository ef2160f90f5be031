"""The ``phasegate`` command: parses arguments, calls the library, prints.

Exit codes: 0 success; 1 rejected input or a failed check (the command says which);
2 usage or configuration error; 3 both stores failed (nothing was recorded).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from phasegate import __version__
from phasegate.cli_runs import register as register_run_commands
from phasegate.config import Pipeline, find_config_path, load_pipeline
from phasegate.errors import BothStoresFailed, ConfigError, PhasegateError, ValidationError
from phasegate.logs import configure_logging
from phasegate.model import TriggerReason
from phasegate.orchestrator import PhaseStatus
from phasegate.runtime import Runtime, open_runtime
from phasegate.timeouts import run_maintenance

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_STORES_DOWN = 0, 1, 2, 3

_STATE_MARKS = {
    "not_started": "·",
    "waiting": "…",
    "complete": "✓",
    "triggered": "→",
    "timed_out": "✗",
}


def _emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _load(args: argparse.Namespace) -> Pipeline:
    return load_pipeline(find_config_path(args.config))


def _open(args: argparse.Namespace) -> Runtime:
    return open_runtime(_load(args))


# -- complete -------------------------------------------------------------------------------


def cmd_complete(args: argparse.Namespace) -> int:
    """Record one completion; deliver the trigger it caused before exiting."""
    metadata: Any = None
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as exc:
            print(f"rejected: metadata: not valid JSON: {exc}", file=sys.stderr)
            return EXIT_REJECTED
    runtime = _open(args)
    try:
        try:
            result = runtime.orchestrator.handle_completion(
                args.phase,
                args.run_key,
                args.processor,
                status=args.status,
                correlation_id=args.correlation_id,
                metadata=metadata,
            )
        except ValidationError as exc:
            print(f"rejected: {exc}", file=sys.stderr)
            return EXIT_REJECTED
        except BothStoresFailed as exc:
            print(f"not recorded: {exc}", file=sys.stderr)
            return EXIT_STORES_DOWN
        delivery = None
        if result.claimed and result.trigger_id:
            report = runtime.dispatcher.run_once(only={result.trigger_id})
            delivery = "delivered" if result.trigger_id in report.delivered else "pending"
            if report.failed:
                delivery = f"pending ({report.failed[0][1]}); run `phasegate dispatch` to retry"
        data = result.to_dict() | {"delivery": delivery}
        if args.format == "json":
            _emit_json(data)
        else:
            stores = ", ".join(
                f"{name} {'ok' if ok else 'FAILED'}"
                for name, ok in (("primary", result.primary_ok), ("backup", result.backup_ok))
            )
            print(f"recorded {args.phase}/{args.processor} {args.status} for {args.run_key}")
            print(f"  stores: {stores}")
            if result.claimed:
                print(f"phase {args.phase} complete: trigger {result.trigger_id} {delivery}")
            elif result.deferred:
                print(f"phase {args.phase} complete: trigger deferred until a store can decide")
            elif result.phase_complete:
                print(f"phase {args.phase} was already triggered ({result.trigger_id})")
        return EXIT_OK
    finally:
        runtime.close()


# -- dispatch and trigger -------------------------------------------------------------------


def cmd_dispatch(args: argparse.Namespace) -> int:
    """Deliver every pending trigger now; exit 1 if any is still pending."""
    runtime = _open(args)
    try:
        report = runtime.dispatcher.run_once(include_deferred=True)
        if args.format == "json":
            _emit_json(
                {
                    "delivered": list(report.delivered),
                    "failed": [{"trigger_id": t, "error": e} for t, e in report.failed],
                }
            )
        else:
            for trigger_id in report.delivered:
                print(f"delivered {trigger_id}")
            for trigger_id, error in report.failed:
                print(f"still pending {trigger_id}: {error}")
            print(f"{len(report.delivered)} delivered, {len(report.failed)} still pending")
        return EXIT_OK if report.ok else EXIT_REJECTED
    finally:
        runtime.close()


def cmd_trigger(args: argparse.Namespace) -> int:
    """Manual override: trigger a phase now (reason ``manual``), still at most once."""
    runtime = _open(args)
    try:
        try:
            result = runtime.orchestrator.trigger(
                args.phase, args.run_key, reason=TriggerReason.MANUAL
            )
        except ValidationError as exc:
            print(f"rejected: {exc}", file=sys.stderr)
            return EXIT_REJECTED
        except BothStoresFailed as exc:
            print(f"not triggered: {exc}", file=sys.stderr)
            return EXIT_STORES_DOWN
        delivery = None
        if result.claimed:
            report = runtime.dispatcher.run_once(only={result.trigger.trigger_id})
            delivery = "delivered" if report.ok else f"pending ({report.failed[0][1]})"
        if args.format == "json":
            _emit_json(
                {
                    "trigger_id": result.trigger.trigger_id,
                    "claimed": result.claimed,
                    "deferred": result.deferred,
                    "reason": result.trigger.reason.value,
                    "delivery": delivery,
                }
            )
        elif result.claimed:
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
    runtime = _open(args)
    try:
        orchestrator = runtime.orchestrator
        try:
            run_keys = [args.run_key] if args.run_key else orchestrator.list_runs(args.limit)
            runs = {key: orchestrator.run_status(key) for key in run_keys}
        except ValidationError as exc:
            print(f"rejected: {exc}", file=sys.stderr)
            return EXIT_REJECTED
        if args.format == "json":
            _emit_json(
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
    runtime = _open(args)
    try:
        maintenance = run_maintenance(runtime.orchestrator, runs=args.runs)
        findings = maintenance.findings
        claimed = [r.trigger.trigger_id for r in maintenance.swept if r.claimed]
        if maintenance.claimed:
            runtime.dispatcher.run_once(only=maintenance.claimed)
        if args.format == "json":
            _emit_json(
                {
                    "timed_out": [
                        {
                            "phase": f.report.phase,
                            "run_key": f.report.run_key,
                            "missing": list(f.report.missing),
                            "first_report": f.first_report,
                            "trigger_id": f.trigger.trigger.trigger_id if f.trigger else None,
                        }
                        for f in findings
                    ],
                    "swept": claimed,
                }
            )
        else:
            for finding in findings:
                new = "reported" if finding.first_report else "already reported"
                print(
                    f"timed out: {finding.report.phase} for {finding.report.run_key} ({new}); "
                    f"missing: {', '.join(finding.report.missing)}"
                )
            for trigger_id in claimed:
                print(f"claimed a complete, untriggered phase: {trigger_id}")
            if not findings:
                print("no phase past its timeout")
        return EXIT_REJECTED if findings else EXIT_OK
    finally:
        runtime.close()


# -- summary --------------------------------------------------------------------------------


def cmd_summary(args: argparse.Namespace) -> int:
    """Print (and with --send, post to Slack) the summary of one run."""
    from phasegate.alerts.base import AlertDeliveryError  # noqa: PLC0415
    from phasegate.alerts.slack import SlackSink, run_summary_payload  # noqa: PLC0415
    from phasegate.summary import summarise_run  # noqa: PLC0415

    pipeline = _load(args)
    if args.send and pipeline.alerts.slack is None:
        print("configuration error: --send needs [alerts.slack] webhook_url", file=sys.stderr)
        return EXIT_USAGE
    runtime = open_runtime(pipeline)
    try:
        try:
            summary = summarise_run(runtime.orchestrator, args.run_key)
        except ValidationError as exc:
            print(f"rejected: {exc}", file=sys.stderr)
            return EXIT_REJECTED
        if args.format == "json":
            _emit_json(summary.to_dict())
        else:
            print(summary.to_text())
        if args.send and pipeline.alerts.slack is not None:
            sink = SlackSink(pipeline.alerts.slack.webhook_url.reveal())
            payload = run_summary_payload(
                summary.title,
                [p.line for p in summary.phases],
                summary.ok,
                f"generated {summary.generated_at:%Y-%m-%d %H:%M:%S} UTC",
            )
            try:
                sink.post(payload)
            except AlertDeliveryError as exc:
                print(f"summary not sent: {exc}", file=sys.stderr)
                return EXIT_REJECTED
            print("summary sent to Slack", file=sys.stderr)
        return EXIT_OK
    finally:
        runtime.close()


# -- serve and health ------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP service with its background loops."""
    from phasegate.service.server import serve  # noqa: PLC0415 - web stack on demand

    return serve(_load(args), host=args.host, port=args.port)


def cmd_health(args: argparse.Namespace) -> int:
    """Probe a running service: exit 0 healthy, 1 degraded, 2 unreachable."""
    import httpx  # noqa: PLC0415

    url = args.url.rstrip("/") + "/health"
    try:
        response = httpx.get(url, timeout=args.timeout)
        data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"unreachable: {url}: {type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "json":
        _emit_json(data)
    else:
        print(f"{data.get('status', '?')} ({response.status_code}) {url}")
        for name, dep in (data.get("dependencies") or {}).items():
            state = "ok" if dep.get("healthy") else f"FAILING: {dep.get('error', '')}"
            print(f"  {name:<18} {state}  {dep.get('latency_ms', 0):.1f} ms")
    return EXIT_OK if response.status_code == 200 else EXIT_REJECTED


# -- reconcile ------------------------------------------------------------------------------


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare the two stores over a run-key range; --repair copies what is missing."""
    from phasegate.reconcile import FIRST_KEY, LAST_KEY, reconcile  # noqa: PLC0415

    runtime = _open(args)
    try:
        report = reconcile(
            runtime.tracker.primary,
            runtime.tracker.backup,
            args.first or FIRST_KEY,
            args.last or LAST_KEY,
            repair=args.repair,
            events=runtime.events,
        )
        if args.format == "json":
            _emit_json(report.to_dict())
        else:
            for difference in report.differences:
                where = (
                    f"missing in {difference.missing_in}" if difference.missing_in else "differs"
                )
                print(
                    f"{difference.kind} {'/'.join(difference.key)}: {where} ({difference.detail})"
                )
            for claim in report.double_claims:
                print(f"DOUBLE CLAIM {'/'.join(claim.key)}: {claim.detail}")
            counts = ", ".join(f"{k} {v}" for k, v in report.counts().items() if v)
            print(f"{len(report.differences)} difference(s)" + (f" ({counts})" if counts else ""))
            if report.repaired:
                print(f"repaired; {len(report.remaining)} remain")
        return EXIT_OK if report.clean else EXIT_REJECTED
    finally:
        runtime.close()


# -- drift ----------------------------------------------------------------------------------


def cmd_drift(args: argparse.Namespace) -> int:
    """Compare deployments with git; exit 0 nothing stale, 1 something stale, 2 failure."""
    import dataclasses  # noqa: PLC0415
    import os  # noqa: PLC0415

    from phasegate.drift import check_drift, load_drift, open_provider  # noqa: PLC0415
    from phasegate.drift.github import GitHubError, GitHubIssues  # noqa: PLC0415
    from phasegate.drift.report import to_json, to_markdown, to_text  # noqa: PLC0415

    path = find_config_path(args.config)
    config = load_drift(path)
    if args.provider:
        config = dataclasses.replace(config, provider=args.provider)
    provider = open_provider(
        config.provider,
        cwd=path.resolve().parent,
        project=config.project,
        region=config.region,
        sha_label=config.sha_label,
        concurrency=config.concurrency,
        timeout=config.timeout,
    )
    report = check_drift(config, provider, stale_hours=args.stale_hours)
    if args.format == "json":
        print(to_json(report, verbose=args.verbose))
    elif args.format == "markdown":
        print(to_markdown(report, verbose=args.verbose))
    else:
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        print(to_text(report, verbose=args.verbose, colour=colour))
    if args.github_issue:
        try:
            outcome = GitHubIssues.from_environment().upsert(report)
        except GitHubError as exc:
            print(f"github issue not updated: {exc}", file=sys.stderr)
            return EXIT_USAGE
        where = f" #{outcome.number} {outcome.url or ''}" if outcome.number else ""
        print(f"github issue: {outcome.action}{where}", file=sys.stderr)
    return EXIT_REJECTED if report.stale else EXIT_OK


# -- audit ----------------------------------------------------------------------------------


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit deployable function folders; exit 1 when anything is found."""
    from phasegate.audit import audit  # noqa: PLC0415

    try:
        report = audit(args.paths, requirements=args.requirements, shared=args.shared)
    except FileNotFoundError as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not report.folders:
        print(
            f"usage error: no deployable folder (with a main.py) under {', '.join(args.paths)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.format == "json":
        _emit_json(report.to_dict())
    else:
        print(report.to_text())
    return EXIT_REJECTED if report.findings else EXIT_OK


# -- demo -----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a realistic day on embedded SQLite and check every guarantee."""
    from phasegate.demo import run_demo  # noqa: PLC0415 - rich and threads load on demand

    return run_demo(runs=args.runs, seed=args.seed, state_dir=args.state_dir)


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="phasegate",
        description="Move multi-phase data pipelines from one phase to the next exactly once.",
        epilog="Exit codes: 0 ok, 1 rejected or check failed, 2 usage/config error, "
        "3 both stores failed.",
    )
    parser.add_argument("--version", action="version", version=f"phasegate {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log verbosity on stderr (default WARNING; INFO for serve)",
    )
    parser.add_argument(
        "--log-format",
        default=None,
        choices=["text", "json"],
        help="log lines as text or JSON (default text; json for serve)",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="pipeline file (default: $PHASEGATE_CONFIG, then ./phasegate.toml)",
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--format", choices=["text", "json"], default="text")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        name: str,
        handler: Callable[[argparse.Namespace], int],
        help_text: str,
        *parents: argparse.ArgumentParser,
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text, parents=list(parents)
        )
        sub.set_defaults(handler=handler)
        return sub

    demo = add("demo", cmd_demo, "simulate a day of a 5-phase pipeline and check every guarantee")
    demo.add_argument("--runs", type=int, default=5, help="run keys (days) to simulate (default 5)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument("--state-dir", help="keep the stores here (default: a temporary folder)")

    complete = add("complete", cmd_complete, "record one processor's completion", common, output)
    complete.add_argument("--phase", required=True)
    complete.add_argument("--run-key", required=True)
    complete.add_argument("--processor", required=True)
    complete.add_argument("--status", default="success", help="success (default) or failed")
    complete.add_argument("--metadata", help="a JSON object, at most 16 KiB")
    complete.add_argument("--correlation-id")

    add("dispatch", cmd_dispatch, "deliver pending triggers and exit", common, output)

    trigger = add(
        "trigger", cmd_trigger, "trigger a phase now (manual override, still once)", common, output
    )
    trigger.add_argument("--phase", required=True)
    trigger.add_argument("--run-key", required=True)

    register_run_commands(add, _open, common, output)

    status = add("status", cmd_status, "show each phase's state for a run", common, output)
    status.add_argument("run_key", nargs="?", metavar="RUN_KEY")
    status.add_argument("--limit", type=int, default=10, help="recent runs to show (default 10)")

    serve = add(
        "serve", cmd_serve, "run the HTTP service (API, health, metrics, dashboard)", common
    )
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="listen port (default 8080)")

    health = add("health", cmd_health, "probe a running service's /health", output)
    health.add_argument("--url", default="http://127.0.0.1:8080", help="the service's base URL")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")

    reconcile = add(
        "reconcile", cmd_reconcile, "compare the primary and backup stores", common, output
    )
    reconcile.add_argument("--from", dest="first", metavar="RUN_KEY", help="first run key")
    reconcile.add_argument("--to", dest="last", metavar="RUN_KEY", help="last run key")
    reconcile.add_argument("--repair", action="store_true", help="copy what is missing")

    drift = add("drift", cmd_drift, "compare what is deployed with what is in git", common)
    drift.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    drift.add_argument(
        "--provider",
        help="override [drift] provider (gcloud-functions, cloud-run, manifest:F, command:P)",
    )
    drift.add_argument(
        "--verbose", action="store_true", help="list up to 5 recent commits per service"
    )
    drift.add_argument("--stale-hours", type=float, help="override [drift] stale_hours")
    drift.add_argument(
        "--github-issue", action="store_true", help="create/update/close the drift issue"
    )

    audit = add("audit", cmd_audit, "check deployable function folders before they ship", output)
    audit.add_argument("paths", nargs="+", metavar="PATH", help="folders to search for main.py")
    audit.add_argument(
        "--requirements", default="requirements.txt", help="requirements file name in each folder"
    )
    audit.add_argument(
        "--shared",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of local packages that must be shipped inside each function (repeatable)",
    )

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``phasegate`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    serving = args.command == "serve"
    configure_logging(
        args.log_level or ("INFO" if serving else "WARNING"),
        args.log_format or ("json" if serving else "text"),
    )
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BothStoresFailed as exc:
        print(f"both stores failed: {exc}", file=sys.stderr)
        return EXIT_STORES_DOWN
    except PhasegateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    return code


if __name__ == "__main__":
    sys.exit(main())
