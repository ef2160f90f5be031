"""Commands around the HTTP service: serve, health."""

from __future__ import annotations

import argparse
import os
import sys

from phasegate.cli.common import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, Adder, emit_json, load
from phasegate.errors import ConfigError


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP service with its background loops."""
    from phasegate.service.server import serve  # noqa: PLC0415 - web stack on demand

    port = args.port
    if port is None:
        raw = os.environ.get("PORT", "8080")
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ConfigError(f"PORT must be a TCP port number, got {raw!r}")
        port = int(raw)
    return serve(load(args), host=args.host, port=port, workers=args.workers)


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
        emit_json(data)
    else:
        print(f"{data.get('status', '?')} ({response.status_code}) {url}")
        for name, dep in (data.get("dependencies") or {}).items():
            state = "ok" if dep.get("healthy") else f"FAILING: {dep.get('error', '')}"
            where = f"  {dep['description']}" if dep.get("description") else ""
            print(f"  {name:<18} {state}  {dep.get('latency_ms', 0):.1f} ms{where}")
    return EXIT_OK if response.status_code == 200 else EXIT_REJECTED


def register(add: Adder, common: argparse.ArgumentParser, output: argparse.ArgumentParser) -> None:
    """Add this group's subcommands."""
    serve = add(
        "serve", cmd_serve, "run the HTTP service (API, health, metrics, dashboard)", common
    )
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=None, help="listen port (default $PORT, else 8080)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1; more than 1 needs PostgreSQL or MariaDB stores)",
    )

    health = add("health", cmd_health, "probe a running service's /health", output)
    health.add_argument("--url", default="http://127.0.0.1:8080", help="the service's base URL")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
