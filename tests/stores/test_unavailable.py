"""Stores that cannot be reached fail with a transient, secret-free error."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from phasegate.errors import ConfigError, TransientStoreError
from phasegate.model import Status
from phasegate.stores import open_store
from phasegate.stores.sql import SqlStore, redact_url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_an_unreachable_server_is_a_transient_error_without_the_password(scheme: str) -> None:
    """Connection refused maps to TransientStoreError; the password never shows."""
    store = SqlStore(
        f"{scheme}://user:hunter2@127.0.0.1:{_free_port()}/db", pipeline="p", name="primary"
    )
    with pytest.raises(TransientStoreError) as info:
        store.list_runs()
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(store)
    store.close()


def test_sqlite_in_a_place_that_cannot_exist_is_transient(tmp_path: Path) -> None:
    """A SQLite file that cannot be opened is reported by the store's name."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((TransientStoreError, OSError)):
        SqlStore(f"sqlite:///{blocker}/sub/db.sqlite", pipeline="p", name="backup").ping()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///:memory:", "needs a file path"),
        ("sqlite:///x.db?synchronous=SOMETIMES", "synchronous='SOMETIMES'"),
        ("firestore://", "names no project"),
        ("redis://localhost", "unsupported URL scheme 'redis'"),
    ],
)
def test_bad_store_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    """A store URL that cannot work is a ConfigError naming why."""
    with pytest.raises(ConfigError, match=message):
        open_store(url, pipeline="p")


def test_redact_url_hides_passwords() -> None:
    """Passwords are masked in anything printable."""
    assert "s3cret" not in redact_url("postgresql://u:s3cret@h/db")
    assert Status("success") is Status.SUCCESS


@pytest.mark.parametrize(
    ("url", "module", "message"),
    [
        (
            "postgresql://u@127.0.0.1/db",
            "psycopg",
            r"PostgreSQL driver: pip install 'phasegate\[postgres\]'",
        ),
        (
            "mysql://u@127.0.0.1/db",
            "pymysql",
            r"MySQL/MariaDB driver: pip install 'phasegate\[mysql\]'",
        ),
    ],
)
def test_a_missing_driver_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, message: str
) -> None:
    """A store URL whose driver is not installed is a ConfigError naming the extra."""
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=message):
        open_store(url, pipeline="p")
