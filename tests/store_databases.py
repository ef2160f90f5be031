"""Fresh, empty databases for store tests: a SQLite file, a PostgreSQL schema or a
MariaDB database, each dropped when the test ends."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from support import (
    MYSQL_ADMIN_URL,
    MYSQL_HOST,
    MYSQL_PORT,
    PG_ADMIN_URL,
    PG_HOST,
    PG_PORT,
    require_server,
)


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


def url_maker(
    backend: str, tmp_path_factory: pytest.TempPathFactory, cleanups: list[Callable[[], None]]
) -> Callable[[str], str]:
    """``make(label)`` for ``backend``: a fresh, empty database URL (cleanups registered)."""

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

    return make
