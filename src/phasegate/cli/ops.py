"""Operations commands: reconcile, alert test, drift, audit, demo."""

from __future__ import annotations

import argparse
import sys

from phasegate.cli.common import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
    Adder,
    emit_json,
    load,
    open_for,
)
from phasegate.config import find_config_path

# -- reconcile ------------------------------------------------------------------------------


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare the two stores over a run-key range; --repair copies what is missing."""
    from phasegate.reconcile import FIRST_KEY, LAST_KEY, reconcile  # noqa: PLC0415

    runtime = open_for(args)
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
            emit_json(report.to_dict())
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


# -- alert test -----------------------------------------------------------------------------


def cmd_alert_test(args: argparse.Namespace) -> int:
    """Send a test alert through every configured sink; exit 1 if any did not deliver it."""
    from phasegate.alerts import send_test_alert  # noqa: PLC0415

    results = send_test_alert(load(args))
    if not results:
        print(
            "configuration error: no alert sink is configured; add [alerts.slack] "
            "webhook_url or [alerts.log] to the pipeline file",
            file=sys.stderr,
        )
        return EXIT_USAGE
    delivered = sum(result.delivered for result in results)
    if args.format == "json":
        emit_json(
            {
                "delivered": delivered == len(results),
                "sinks": [result.to_dict() for result in results],
            }
        )
    else:
        for result in results:
            state = "delivered" if result.delivered else f"FAILED: {result.error}"
            print(f"{result.sink:<6} {result.target}: {state} ({result.seconds * 1000:.0f} ms)")
        print(f"test alert delivered by {delivered} of {len(results)} sink(s)")
    return EXIT_OK if delivered == len(results) else EXIT_REJECTED


def _add_alert_parser(
    add: Adder, common: argparse.ArgumentParser, output: argparse.ArgumentParser
) -> None:
    """``phasegate alert test``."""
    alert = add("alert", cmd_alert_test, "check the alert sinks (alert test)")
    actions = alert.add_subparsers(dest="alert_action", required=True)
    test = actions.add_parser(
        "test",
        help="send a test alert through every configured sink and say which delivered it",
        description="send a test alert through every configured sink and say which delivered "
        "it; exit 0 all delivered, 1 some failed, 2 none configured",
        parents=[common, output],
    )
    test.set_defaults(handler=cmd_alert_test)


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
        # drift's own exit code: 2 means "the check itself failed", not "rejected".
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
    from phasegate.audit import audit, load_settings  # noqa: PLC0415

    try:
        settings = load_settings(args.config, args.paths)
        report = audit(
            args.paths,
            requirements=args.requirements,
            bundled=[*settings.bundled, *args.bundled],
            strict=args.strict or settings.strict,
            provides=settings.provides,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not report.folders:
        print(
            f"usage error: no deployable folder (with a main.py) under {', '.join(args.paths)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.format == "json":
        emit_json(report.to_dict())
    else:
        print(report.to_text())
    return EXIT_REJECTED if report.findings else EXIT_OK


# -- demo -----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a realistic day on embedded SQLite and check every guarantee."""
    from phasegate.demo import run_demo  # noqa: PLC0415 - rich and threads load on demand

    return run_demo(runs=args.runs, seed=args.seed, state_dir=args.state_dir, config=args.config)


# -- parsers --------------------------------------------------------------------------------


def register(add: Adder, common: argparse.ArgumentParser, output: argparse.ArgumentParser) -> None:
    """Add this group's subcommands."""
    demo = add("demo", cmd_demo, "simulate a day of a 5-phase pipeline and check every guarantee")
    demo.add_argument("--runs", type=int, default=5, help="run keys (days) to simulate (default 5)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument("--state-dir", help="keep the stores here (default: a temporary folder)")
    demo.add_argument(
        "--config",
        metavar="FILE",
        help="a pipeline file to simulate instead of the packaged NBA example (its stores and "
        "transport are replaced by SQLite files and a log in the state folder)",
    )

    reconcile = add(
        "reconcile", cmd_reconcile, "compare the primary and backup stores", common, output
    )
    reconcile.add_argument("--from", dest="first", metavar="RUN_KEY", help="first run key")
    reconcile.add_argument("--to", dest="last", metavar="RUN_KEY", help="last run key")
    reconcile.add_argument("--repair", action="store_true", help="copy what is missing")

    _add_alert_parser(add, common, output)
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
        "--bundled",
        "--shared",
        dest="bundled",
        action="append",
        default=[],
        metavar="DIR",
        help="a local package the deploy copies into every function (repeatable)",
    )
    audit.add_argument(
        "--strict", action="store_true", help="also report imports only a dependency brings"
    )
    audit.add_argument(
        "--config", metavar="FILE", help="pipeline file whose [audit] table adds settings"
    )
