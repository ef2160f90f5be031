"""The ASGI app: assembles the route modules over a runtime, its health checker and metrics.

Each area's routes live in :mod:`phasegate.service.routes` (completions, Pub/Sub push,
runs, health and metrics, dashboard); errors are answered by the one handler in
:mod:`phasegate.service.errors`; tokens are checked by :mod:`phasegate.service.auth`.
"""

from __future__ import annotations

from fastapi import FastAPI

from phasegate import __version__
from phasegate.config import Secret
from phasegate.health import HealthChecker
from phasegate.metrics import Metrics
from phasegate.runtime import Runtime
from phasegate.service.auth import Auth
from phasegate.service.body import MAX_BODY_BYTES
from phasegate.service.context import ServiceContext
from phasegate.service.docs import install_api_docs
from phasegate.service.errors import ApiError, install_error_handler
from phasegate.service.fast import PhasegateApp, fast_routes
from phasegate.service.routes import completions, dashboard, health, pubsub, reruns, runs
from phasegate.service.routes.runs import MAX_RUNS

__all__ = ["MAX_BODY_BYTES", "MAX_RUNS", "ApiError", "create_app", "health_checker_for"]

ROUTE_MODULES = (completions, pubsub, runs, reruns, health, dashboard)
"""Each offers ``router(context)``; the app includes them in this order."""


def health_checker_for(runtime: Runtime) -> HealthChecker:
    """A started health checker over ``runtime``'s stores and transport."""
    server = runtime.pipeline.server
    checker = HealthChecker(
        {
            "primary_store": runtime.tracker.primary.ping,
            "backup_store": runtime.tracker.backup.ping,
            "trigger_transport": runtime.transport.ping,
        },
        ttl=server.health_cache.total_seconds(),
        timeout=server.health_timeout.total_seconds(),
        clock=runtime.tracker.clock,
        version=__version__,
        scrubber=runtime.scrubber,
    )
    checker.start()
    return checker


def create_app(
    runtime: Runtime,
    *,
    health: HealthChecker | None = None,
    metrics: Metrics | None = None,
    token: Secret | None = None,
    read_token: Secret | None = None,
) -> FastAPI:
    """The FastAPI app serving ``runtime``; ``token``/``read_token`` override ``[server]``."""
    server = runtime.pipeline.server
    health = health or health_checker_for(runtime)
    context = ServiceContext(
        runtime=runtime,
        health=health,
        metrics=metrics or Metrics(runtime, health),
        auth=Auth(
            token if token is not None else server.token,
            read_token if read_token is not None else server.read_token,
        ),
    )
    app = PhasegateApp(
        title="phasegate",
        version=__version__,
        description=f"Exactly-once phase triggers for pipeline {runtime.pipeline.name!r}.",
        docs_url=None,  # served from installed assets by install_api_docs, not a CDN
        redoc_url=None,
    )
    install_api_docs(app)
    app.state.runtime = runtime
    app.state.health = context.health
    app.state.metrics = context.metrics
    app.state.context = context
    answer_error = install_error_handler(app, runtime, context.metrics)
    for module in ROUTE_MODULES:
        app.include_router(module.router(context))
    app.fast = fast_routes(context, answer_error)
    return app
