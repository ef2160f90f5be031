"""Shared fixtures: fake time, and stores on every backend this machine can run."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from phasegate.stores.sql import SqlStore
from phasegate.testing import FakeClock
from support import (
    MYSQL_ADMIN_URL,
    MYSQL_HOST,
    MYSQL_PORT,
    PG_ADMIN_URL,
    PG_HOST,
    PG_PORT,
    Harness,
    require_server,
)

StoreFactory = Callable[..., SqlStore]


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock; ``clock.sleep`` advances it instantly."""
    return FakeClock()


def _postgres_schema() -> tuple[str, Callable[[], None]]:
    schema = f"pgtest_{uuid.uuid4().hex[:12]}"

    def drop() -> None:
        engine = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()

    return f"{PG_ADMIN_URL}?schema={schema}", drop


def _mysql_database() -> tuple[str, Callable[[], None]]:
    database = f"pgtest_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(MYSQL_ADMIN_URL.replace("mysql://", "mysql+pymysql://"))
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE `{database}`")
    admin.dispose()
    base = MYSQL_ADMIN_URL.rsplit("/", 1)[0]

    def drop() -> None:
        engine = sa.create_engine(MYSQL_ADMIN_URL.replace("mysql://", "mysql+pymysql://"))
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
        engine.dispose()

    return f"{base}/{database}", drop


@pytest.fixture
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], str]]:
    """``store_url(label)`` makes a fresh, empty database URL on the backend under test."""
    backend = getattr(request, "param", "sqlite")
    cleanups: list[Callable[[], None]] = []

    def make(label: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path_factory.mktemp('db')}/{label}.db"
        if backend == "postgres":
            require_server("PostgreSQL", PG_HOST, PG_PORT)
            url, drop = _postgres_schema()
            cleanups.append(drop)
            return url
        if backend == "mysql":
            require_server("MariaDB", MYSQL_HOST, MYSQL_PORT)
            url, drop = _mysql_database()
            cleanups.append(drop)
            return url
        raise ValueError(backend)

    yield make
    for cleanup in cleanups:
        cleanup()


@pytest.fixture
def make_store(store_url: Callable[[str], str]) -> Iterator[StoreFactory]:
    """``make_store(label)`` opens a store on a fresh database of the backend under test."""
    opened: list[SqlStore] = []

    def make(label: str = "primary", *, url: str | None = None, **kwargs: object) -> SqlStore:
        store = SqlStore(url or store_url(label), pipeline="test-pipeline", name=label, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def harness_backend() -> str:
    """The stores a :func:`harness` runs on; a test module overrides this fixture with
    ``params`` to run on several backends."""
    return "sqlite"


@pytest.fixture
def harness(harness_backend: str, tmp_path: Path, clock: FakeClock) -> Iterator[Harness]:
    """A runtime on fresh stores, a fake clock and an in-memory transport."""
    rig = Harness(tmp_path, clock, backend=harness_backend)
    yield rig
    rig.runtime.close()
