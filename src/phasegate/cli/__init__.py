"""The ``phasegate`` command: parses arguments, calls the library, prints.

One module per command group (:mod:`~phasegate.cli.records`,
:mod:`~phasegate.cli.service`, :mod:`~phasegate.cli.ops`); each adds its subcommands
in ``register``. Errors are translated in one place, :func:`main`, through
:func:`phasegate.errors.describe_error`.

Exit codes: 0 success; 1 rejected input or a failed check (the command says which);
2 usage or configuration error (also a missing driver); 3 both stores failed
(nothing was recorded).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from phasegate import __version__
from phasegate.cli import consume, ops, records, runs, service
from phasegate.cli.common import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_STORES_DOWN,
    EXIT_USAGE,
    Handler,
)
from phasegate.clock import Clock
from phasegate.errors import PhasegateError, describe_error
from phasegate.logs import configure_logging
from phasegate.redact import SCRUBBER, Scrubber

__all__ = [
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_STORES_DOWN",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

GROUPS = (records, runs, service, consume, ops)
"""The command-group modules; each has ``register(add, common, output)``."""


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
        name: str, handler: Handler, help_text: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text, parents=list(parents)
        )
        sub.set_defaults(handler=handler)
        return sub

    for group in GROUPS:
        group.register(add, common, output)
    return parser


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Entry point of the ``phasegate`` command.

    ``clock`` drives every runtime the command opens (tests pass a fake one); every
    phasegate error becomes its exit code and one line on stderr, per
    :data:`phasegate.errors.ERROR_MAP`.
    """
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
    args.clock = clock
    args.scrubber = None
    try:
        code: int = args.handler(args)
    except PhasegateError as exc:
        scrubber: Scrubber = args.scrubber or SCRUBBER
        info = describe_error(exc, scrubber.scrub)
        print(info.cli_line, file=sys.stderr)
        return info.exit_code
    finally:
        if args.scrubber is not None:
            args.scrubber.remove_from_logs()
    return code
