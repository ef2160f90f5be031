"""The tables on SQLAlchemy Core, their version, and creating or checking them.

Version 2 added attempts: a completion's identity and its history include the
attempt; executions and timeouts are keyed by phase, run key and attempt; the outbox
is keyed by trigger id and carries the phase-run and a delivery lease.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.engine import Connection

from phasegate.errors import StoreError
from phasegate.stores.sql.engines import Engines

SCHEMA_VERSION = 2
_NAME = sa.String(128)
_SCHEMA_LOCK_KEY = 0x70686173  # "phas": the advisory lock that serialises schema creation


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (microseconds kept)."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql_dialect.DATETIME(fsp=6))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.DateTime(timezone=True))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: phasegate stores UTC-aware times only")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _key(*names: str) -> list[sa.Column[Any]]:
    columns: list[sa.Column[Any]] = [sa.Column(name, _NAME, primary_key=True) for name in names]
    return columns


def _attempt(primary_key: bool = True) -> sa.Column[int]:
    return sa.Column("attempt", sa.Integer(), primary_key=primary_key, autoincrement=False)


def build_tables(metadata: sa.MetaData) -> dict[str, sa.Table]:
    """Every phasegate table, in ``metadata``."""
    tables = [
        sa.Table(
            "phasegate_meta",
            metadata,
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", sa.String(256), nullable=False),
        ),
        sa.Table(
            "phasegate_runs",
            metadata,
            *_key("pipeline", "run_key"),
            sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        ),
        sa.Table(
            "phasegate_completions",
            metadata,
            *_key("pipeline", "run_key", "phase", "processor"),
            _attempt(),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("correlation_id", sa.String(256)),
            sa.Column("metadata", sa.Text(), nullable=False),
            sa.Column("occurred_at", UTCDateTime(), nullable=False),
        ),
        sa.Table(
            "phasegate_completion_history",
            metadata,
            *_key("pipeline", "run_key", "phase", "processor"),
            _attempt(),
            sa.Column("status", sa.String(16), primary_key=True),
            sa.Column("occurred_at", UTCDateTime(), primary_key=True),
            sa.Column("correlation_id", sa.String(256)),
            sa.Column("metadata", sa.Text(), nullable=False),
        ),
        _outbox_table(metadata),
        sa.Table(
            "phasegate_phase_executions",
            metadata,
            *_key("pipeline", "run_key", "phase"),
            _attempt(),
            sa.Column("started_at", UTCDateTime(), nullable=False),
            sa.Column("triggered_at", UTCDateTime(), nullable=False),
            sa.Column("duration_seconds", sa.Float(), nullable=False),
            sa.Column("processors", sa.Text(), nullable=False),
            sa.Column("reason", sa.String(16), nullable=False),
            sa.Column("trigger_id", sa.String(64), nullable=False),
            sa.Index("ix_phasegate_executions_recent", "pipeline", "phase", "triggered_at"),
        ),
        sa.Table(
            "phasegate_timeouts",
            metadata,
            *_key("pipeline", "run_key", "phase"),
            _attempt(),
            sa.Column("started_at", UTCDateTime(), nullable=False),
            sa.Column("reported_at", UTCDateTime(), nullable=False),
            sa.Column("missing", sa.Text(), nullable=False),
        ),
    ]
    names = ["meta", "runs", "completions", "history", "triggers", "executions", "timeouts"]
    return dict(zip(names, tables, strict=True))


def _outbox_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "phasegate_triggers",
        metadata,
        sa.Column("pipeline", _NAME, primary_key=True),
        sa.Column("trigger_id", sa.String(64), primary_key=True),
        sa.Column("run_key", _NAME, nullable=False),
        sa.Column("phase", _NAME, nullable=False),
        _attempt(primary_key=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(1024)),
        sa.Column("next_attempt_at", UTCDateTime()),
        sa.Column("lease_owner", sa.String(256)),
        sa.Column("lease_expires_at", UTCDateTime()),
        # The dispatcher's query: undelivered triggers of a pipeline, oldest first.
        sa.Index("ix_phasegate_triggers_pending", "pipeline", "delivered_at", "claimed_at"),
        sa.Index("ix_phasegate_triggers_run", "pipeline", "run_key"),
    )


def read_version(connection: Connection, meta: sa.Table) -> int | None:
    """The version recorded in ``meta``, or ``None`` when the store is new."""
    if not sa.inspect(connection).has_table(meta.name):
        return None
    found = connection.execute(
        sa.select(meta.c.value).where(meta.c.key == "schema_version")
    ).scalar_one_or_none()
    return None if found is None else int(found)


def check_version(version: int | None, store: str) -> None:
    """Refuse a store written by another schema version, naming both versions."""
    if version is None or version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{store}: store schema version {version} is newer than this phasegate "
            f"understands ({SCHEMA_VERSION}); upgrade phasegate"
        )
    raise StoreError(
        f"{store}: store schema version {version} is older than this phasegate's "
        f"({SCHEMA_VERSION}, which added attempts and delivery leases) and is not migrated "
        "in place; point the store at a new database (and replay your records into it)"
    )


def create_schema(
    engines: Engines, metadata: sa.MetaData, tables: dict[str, sa.Table], store: str
) -> None:
    """Create the tables (or check their version), serialised across processes."""
    if engines.dialect == "sqlite":
        with engines.write.connect() as connection:
            _use_wal(connection.connection.dbapi_connection)
    with _mysql_schema_lock(engines), engines.write.begin() as connection:
        if engines.dialect == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY}
            )
            if engines.schema:
                connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{engines.schema}"')
        version = read_version(connection, tables["meta"])
        check_version(version, store)
        metadata.create_all(connection, checkfirst=True)
        if version is None:
            connection.execute(
                sa.insert(tables["meta"]).values(key="schema_version", value=str(SCHEMA_VERSION))
            )


def _use_wal(raw: Any, attempts: int = 100, pause: float = 0.05) -> None:
    """Put a SQLite file in WAL mode, outside any transaction (the driver connection).

    Switching takes a lock the busy timeout does not wait for, so several handles or
    processes opening one new file at once ("database is locked") try again; a file
    already in WAL is left alone.
    """
    for attempt in range(attempts):
        try:
            if str(raw.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                raw.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(pause)


@contextlib.contextmanager
def _mysql_schema_lock(engines: Engines) -> Iterator[None]:
    """On MySQL/MariaDB, hold a named lock (on a connection of its own) until the schema
    transaction has committed: released inside it, a second process could read the
    version before the first one's insert commits, and insert it again."""
    if engines.dialect != "mysql":
        yield
        return
    with engines.write.connect() as holder:
        holder.execute(sa.text("SELECT GET_LOCK('phasegate_schema', 30)"))
        try:
            yield
        finally:
            holder.execute(sa.text("SELECT RELEASE_LOCK('phasegate_schema')"))
