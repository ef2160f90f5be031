"""``phasegate consume``: record completions pulled from a Pub/Sub subscription."""

from __future__ import annotations

import argparse
import json
import sys
import threading

from phasegate.cli.common import EXIT_OK, EXIT_REJECTED, Adder, load, open_for
from phasegate.errors import ConfigError


def cmd_consume(args: argparse.Namespace) -> int:
    """Record completions pulled from a Pub/Sub subscription until SIGTERM (or one pull)."""
    try:
        from phasegate.consume import (  # noqa: PLC0415 - the Pub/Sub client on demand
            ConsumeReport,
            PubSubConsumer,
            stop_on_signals,
        )
    except ImportError as exc:
        raise ConfigError(f"consume needs {exc.name}: pip install 'phasegate[gcp]'") from None

    pipeline = load(args)
    push = pipeline.server.pubsub_push
    dead_letter = (
        args.dead_letter if args.dead_letter is not None else bool(push and push.dead_letter)
    )
    runtime = open_for(args, pipeline)
    try:
        consumer = PubSubConsumer(
            runtime,
            args.subscription,
            dead_letter=dead_letter,
            max_messages=args.max_messages,
            default_phase=args.phase,
        )

        def show(report: ConsumeReport) -> None:
            if report.received or args.once:
                text = report.to_text() if args.format == "text" else json.dumps(report.to_dict())
                print(text, flush=True)

        if args.once:
            report = consumer.run_once()
            show(report)
            consumer.close()
            return EXIT_REJECTED if report.error or report.redelivered else EXIT_OK
        stop = threading.Event()
        with stop_on_signals(stop):
            print(f"consuming {consumer.subscription}; SIGTERM stops", file=sys.stderr, flush=True)
            consumer.run_forever(stop, on_report=show)
        consumer.close()
        print("consumer stopped", file=sys.stderr)
        return EXIT_OK
    finally:
        runtime.close()


def register(add: Adder, common: argparse.ArgumentParser, output: argparse.ArgumentParser) -> None:
    """Add ``consume``."""
    consume = add(
        "consume",
        cmd_consume,
        "record completions pulled from a Pub/Sub subscription (acknowledged once recorded)",
        common,
        output,
    )
    consume.add_argument("subscription", metavar="pubsub://PROJECT/SUBSCRIPTION")
    consume.add_argument(
        "--max-messages", type=int, default=50, help="messages per pull, in flight at most"
    )
    consume.add_argument(
        "--dead-letter",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="acknowledge malformed messages with an ERROR log and an alert "
        "(default: [server.pubsub_push] dead_letter, else off: leave them for redelivery)",
    )
    consume.add_argument("--phase", help="phase of messages whose body names none")
    consume.add_argument("--once", action="store_true", help="pull once, then exit")
