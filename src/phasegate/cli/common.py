"""What every command shares: exit codes, loading the pipeline, opening a runtime, JSON out."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, Protocol

from phasegate.clock import SYSTEM_CLOCK, Clock
from phasegate.config import Pipeline, find_config_path, load_pipeline
from phasegate.errors import EXIT_OK, EXIT_REJECTED, EXIT_STORES_DOWN, EXIT_USAGE
from phasegate.runtime import Runtime, open_runtime, scrubber_for

__all__ = [
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_STORES_DOWN",
    "EXIT_USAGE",
    "Adder",
    "Handler",
    "clock_of",
    "emit_json",
    "load",
    "open_for",
]

Handler = Callable[[argparse.Namespace], int]


class Adder(Protocol):
    """Adds one subcommand: ``add(name, handler, help, *parents)`` returns its parser."""

    def __call__(
        self, name: str, handler: Handler, help_text: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser: ...


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    print(json.dumps(data, indent=2, sort_keys=False))


def load(args: argparse.Namespace) -> Pipeline:
    """The pipeline file named by ``--config`` (or found the usual way)."""
    return load_pipeline(find_config_path(args.config))


def clock_of(args: argparse.Namespace) -> Clock:
    """The clock ``main`` was given (the real one unless a test drives the CLI)."""
    clock: Clock = getattr(args, "clock", None) or SYSTEM_CLOCK
    return clock


def open_for(args: argparse.Namespace, pipeline: Pipeline | None = None) -> Runtime:
    """The runtime of the pipeline file, on the clock ``main`` was given.

    Its scrubber is kept on ``args`` so that ``main`` masks the pipeline's secrets in
    the error it prints, even when opening the runtime is what failed.
    """
    pipeline = pipeline or load(args)
    args.scrubber = scrubber_for(pipeline)
    return open_runtime(pipeline, clock=clock_of(args), scrubber=args.scrubber)
