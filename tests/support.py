"""Helpers the tests share: which servers are reachable, and backend parametrization."""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_HOST, PG_PORT = "127.0.0.1", int(os.environ.get("PHASEGATE_TEST_PG_PORT", "5432"))
MYSQL_HOST, MYSQL_PORT = "127.0.0.1", int(os.environ.get("PHASEGATE_TEST_MYSQL_PORT", "3306"))
PG_ADMIN_URL = os.environ.get(
    "PHASEGATE_TEST_PG_URL", f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"
)
MYSQL_ADMIN_URL = os.environ.get(
    "PHASEGATE_TEST_MYSQL_URL", f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/test"
)
BACKENDS = ("sqlite", "postgres", "mysql")


def reachable(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    """Skip when the server is not running on a laptop; fail in CI, where it must be."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}, and CI=true requires it (.ci/run starts it)")
    pytest.skip(f"{message}; start it to run these tests")


def backends(*names: str) -> pytest.MarkDecorator:
    """Parametrize the ``store_url`` fixture over backends (default: all)."""
    chosen = names or BACKENDS
    params = [
        pytest.param(name, marks=[getattr(pytest.mark, name)] if name != "sqlite" else [], id=name)
        for name in chosen
    ]
    return pytest.mark.parametrize("store_url", params, indirect=True)
