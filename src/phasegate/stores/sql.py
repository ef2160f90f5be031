"""The SQL store on SQLAlchemy Core: SQLite (embedded default), PostgreSQL and MariaDB/MySQL.

Driver errors become phasegate errors in one place (:func:`map_driver_errors`): the
tracker decides what to retry without knowing any driver.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.url import URL

from phasegate.errors import ConfigError, StoreError, TransientStoreError
from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseExecution,
    PhaseRun,
    RecordSet,
    Status,
    TimeoutReport,
    Trigger,
    TriggerReason,
    frozen_metadata,
)
from phasegate.stores.base import ALL_CAPABILITIES, Capability
from phasegate.stores.group_commit import GroupCommitter

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA_VERSION = 1
_NAME = sa.String(128)
# Claims and timeouts are decided by an INSERT's row count, which SQLAlchemy keeps only on request.
_EXECUTION_OPTIONS = {"preserve_rowcount": True}
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


def _tables(metadata: sa.MetaData) -> dict[str, sa.Table]:
    meta = sa.Table(
        "phasegate_meta",
        metadata,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    runs = sa.Table(
        "phasegate_runs",
        metadata,
        sa.Column("pipeline", _NAME, primary_key=True),
        sa.Column("run_key", _NAME, primary_key=True),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    )
    completions = sa.Table(
        "phasegate_completions",
        metadata,
        sa.Column("pipeline", _NAME, primary_key=True),
        sa.Column("run_key", _NAME, primary_key=True),
        sa.Column("phase", _NAME, primary_key=True),
        sa.Column("processor", _NAME, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("correlation_id", sa.String(256)),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
    )
    history = sa.Table(
        "phasegate_completion_history",
        metadata,
        sa.Column("pipeline", _NAME, primary_key=True),
        sa.Column("run_key", _NAME, primary_key=True),
        sa.Column("phase", _NAME, primary_key=True),
        sa.Column("processor", _NAME, primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("occurred_at", UTCDateTime(), primary_key=True),
        sa.Column("correlation_id", sa.String(256)),
        sa.Column("metadata", sa.Text(), nullable=False),
    )
    triggers = sa.Table(
        "phasegate_triggers",
        metadata,
        sa.Column("pipeline", _NAME, primary_key=True),
        sa.Column("run_key", _NAME, primary_key=True),
        sa.Column("phase", _NAME, primary_key=True),
        sa.Column("trigger_id", sa.String(64), nullable=False, unique=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(1024)),
        sa.Column("next_attempt_at", UTCDateTime()),
        sa.Index("ix_phasegate_triggers_pending", "pipeline", "delivered_at", "next_attempt_at"),
    )
    executions = sa.Table(
        "phasegate_phase_executions",
        metadata,
        sa.Column("pipeline", _NAME, primary_key=True),
        sa.Column("run_key", _NAME, primary_key=True),
        sa.Column("phase", _NAME, primary_key=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("triggered_at", UTCDateTime(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("processors", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("trigger_id", sa.String(64), nullable=False),
        sa.Index("ix_phasegate_executions_recent", "pipeline", "phase", "triggered_at"),
    )
    timeouts = sa.Table(
        "phasegate_timeouts",
        metadata,
        sa.Column("pipeline", _NAME, primary_key=True),
        sa.Column("run_key", _NAME, primary_key=True),
        sa.Column("phase", _NAME, primary_key=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
        sa.Column("missing", sa.Text(), nullable=False),
    )
    return {
        "meta": meta,
        "runs": runs,
        "completions": completions,
        "history": history,
        "triggers": triggers,
        "executions": executions,
        "timeouts": timeouts,
    }


_TRANSIENT = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)


def _short(exc: BaseException) -> str:
    origin = getattr(exc, "orig", None) or exc
    text = str(origin).strip().splitlines()
    return text[0] if text else type(origin).__name__


@contextmanager
def map_driver_errors(store: str) -> Iterator[None]:
    """Turn SQLAlchemy/driver errors into ``TransientStoreError`` or ``StoreError``."""
    try:
        yield
    except _TRANSIENT as exc:
        raise TransientStoreError(f"{store}: {_short(exc)}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"{store}: {_short(exc)}") from exc


def _mapped(method: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store: SqlStore = args[0]  # type: ignore[assignment]
        with map_driver_errors(store.name):
            store.ensure_schema()
            return method(*args, **kwargs)

    return wrapper


def _isolate(error: BaseException) -> bool:
    """A batch that failed on a data error is re-run one operation at a time."""
    return isinstance(error, sa.exc.SQLAlchemyError) and not isinstance(error, _TRANSIENT)


def _replace_condition(table: sa.Table, new: Any) -> sa.ColumnElement[bool]:
    """``model.prefer`` in SQL: success wins; the earliest success, the latest failure."""
    success = Status.SUCCESS.value
    return sa.or_(
        sa.and_(
            table.c.status != success,
            sa.or_(new.status == success, new.occurred_at >= table.c.occurred_at),
        ),
        sa.and_(
            table.c.status == success,
            new.status == success,
            new.occurred_at < table.c.occurred_at,
        ),
    )


def redact_url(url: str) -> str:
    """``url`` with any password replaced, safe to log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.rsplit("@", maxsplit=1)[-1]


class SqlStore:
    """A :class:`~phasegate.stores.base.CompletionStore` on SQLAlchemy Core.

    ``sqlite:///path[?synchronous=FULL|NORMAL]`` runs in WAL mode with durable commits
    by default; ``postgresql://...[?schema=NAME]`` uses psycopg 3; ``mysql://...`` uses
    PyMySQL. The schema is created on first use and versioned in ``phasegate_meta``.
    """

    def __init__(
        self,
        url: str,
        *,
        pipeline: str,
        name: str = "store",
        group_commit: bool = True,
        max_batch: int = 512,
        connect_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.pipeline = pipeline
        self.url = url
        self._schema_name: str | None = None
        self._write_engine, self._read_engine = self._create_engines(url, connect_timeout)
        self.dialect = self._write_engine.dialect.name
        self._metadata = sa.MetaData()
        self._t = _tables(self._metadata)
        self._ignore_cache: dict[str, Any] = {}
        self._upsert = self._build_upsert()
        completions = self._t["completions"]
        self._completions_of_run = (
            sa.select(completions)
            .where(
                completions.c.pipeline == sa.bindparam("pipeline"),
                completions.c.run_key == sa.bindparam("run_key"),
            )
            .order_by(completions.c.phase, completions.c.processor)
        )
        self._completions_of_phase = self._completions_of_run.where(
            completions.c.phase == sa.bindparam("phase")
        )
        self._succeeded_in_phase = sa.select(completions.c.processor).where(
            completions.c.pipeline == sa.bindparam("pipeline"),
            completions.c.run_key == sa.bindparam("run_key"),
            completions.c.phase == sa.bindparam("phase"),
            completions.c.status == Status.SUCCESS.value,
        )
        self._schema_ready = threading.Event()
        self._schema_lock = threading.Lock()
        self._committer = (
            GroupCommitter(
                self._write_engine.begin, isolate=_isolate, max_batch=max_batch, name=name
            )
            if group_commit
            else None
        )

    # -- engines -------------------------------------------------------------------------

    @property
    def engines(self) -> tuple[Engine, ...]:
        """The engines behind this store (two for SQLite: writer and reader)."""
        if self._read_engine is self._write_engine:
            return (self._write_engine,)
        return (self._write_engine, self._read_engine)

    @property
    def group_committer(self) -> GroupCommitter | None:
        """The group committer, for statistics (batches and operations)."""
        return self._committer

    def _create_engines(self, raw_url: str, connect_timeout: float) -> tuple[Engine, Engine]:
        try:
            url = make_url(raw_url)
        except sa.exc.ArgumentError as exc:
            raise ConfigError(f"{self.name} store: invalid URL {redact_url(raw_url)!r}") from exc
        backend = url.get_backend_name()
        if backend == "sqlite":
            return self._sqlite_engines(url)
        if backend in {"postgresql", "postgres"}:
            query = dict(url.query)
            schema = query.pop("schema", None)
            connect_args: dict[str, Any] = {"connect_timeout": max(1, int(connect_timeout))}
            if isinstance(schema, str):
                if not schema.replace("_", "").isalnum():
                    raise ConfigError(f"{self.name} store: schema {schema!r} must be alphanumeric")
                self._schema_name = schema
                connect_args["options"] = f"-c search_path={schema}"
            url = url.set(drivername="postgresql+psycopg", query=query)
            engine = sa.create_engine(
                url,
                pool_pre_ping=True,
                pool_size=8,
                max_overflow=16,
                connect_args=connect_args,
                execution_options=_EXECUTION_OPTIONS,
            )
            return engine, engine
        if backend in {"mysql", "mariadb"}:
            url = url.set(drivername="mysql+pymysql")
            engine = sa.create_engine(
                url,
                pool_pre_ping=True,
                pool_size=8,
                max_overflow=16,
                pool_recycle=3600,
                connect_args={
                    "connect_timeout": max(1, int(connect_timeout)),
                    "charset": "utf8mb4",
                },
                isolation_level="READ COMMITTED",
                execution_options=_EXECUTION_OPTIONS,
            )
            return engine, engine
        raise ConfigError(f"{self.name} store: unsupported database {backend!r}")

    def _sqlite_engines(self, url: URL) -> tuple[Engine, Engine]:
        database = url.database or ""
        if database in {"", ":memory:"}:
            raise ConfigError(
                f"{self.name} store: sqlite needs a file path (sqlite:///path/to/file.db); "
                "an in-memory database would not survive the process"
            )
        query = dict(url.query)
        synchronous = str(query.pop("synchronous", "FULL")).upper()
        if synchronous not in {"FULL", "NORMAL", "EXTRA", "OFF"}:
            raise ConfigError(
                f"{self.name} store: synchronous={synchronous!r}; "
                "expected FULL, NORMAL, EXTRA or OFF"
            )
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        url = url.set(drivername="sqlite+pysqlite", query=query)

        def build(begin: str | None) -> Engine:
            # A pool large enough that concurrent callers never churn overflow connections.
            engine = sa.create_engine(
                url,
                connect_args={"timeout": 30, "check_same_thread": False},
                execution_options=_EXECUTION_OPTIONS,
                pool_size=32,
                max_overflow=32,
            )

            @event.listens_for(engine, "connect")
            def _configure(dbapi_connection: Any, _record: Any) -> None:
                # Let SQLAlchemy's "begin" event decide how transactions start.
                dbapi_connection.isolation_level = None
                cursor = dbapi_connection.cursor()
                # WAL is a property of the file, set once by ensure_schema; setting it on
                # every new connection would take a lock each time.
                cursor.execute(f"PRAGMA synchronous={synchronous}")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

            if begin is not None:

                @event.listens_for(engine, "begin")
                def _begin(connection: Connection) -> None:
                    # Writers take the lock up front so two processes never deadlock on upgrade.
                    connection.exec_driver_sql(begin)

            return engine

        # Readers run each SELECT in its own implicit transaction (a consistent snapshot in
        # WAL mode) and skip BEGIN/ROLLBACK round trips.
        return build("BEGIN IMMEDIATE"), build(None)

    # -- schema --------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create (or check) the schema once per store object."""
        if self._schema_ready.is_set():
            return
        with self._schema_lock:
            if self._schema_ready.is_set():
                return
            if self.dialect == "sqlite":
                with self._write_engine.connect() as connection:
                    connection.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                        "PRAGMA journal_mode=WAL"
                    )
            with self._write_engine.begin() as connection:
                if self.dialect == "postgresql":
                    connection.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY}
                    )
                    if self._schema_name:
                        connection.exec_driver_sql(
                            f'CREATE SCHEMA IF NOT EXISTS "{self._schema_name}"'
                        )
                elif self.dialect == "mysql":
                    connection.execute(sa.text("SELECT GET_LOCK('phasegate_schema', 30)"))
                try:
                    self._metadata.create_all(connection, checkfirst=True)
                    self._check_version(connection)
                finally:
                    if self.dialect == "mysql":
                        connection.execute(sa.text("SELECT RELEASE_LOCK('phasegate_schema')"))
            self._schema_ready.set()

    def _check_version(self, connection: Connection) -> None:
        meta = self._t["meta"]
        found = connection.execute(
            sa.select(meta.c.value).where(meta.c.key == "schema_version")
        ).scalar_one_or_none()
        if found is None:
            connection.execute(
                sa.insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION))
            )
            return
        version = int(found)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.name}: store schema version {version} is newer than this phasegate "
                f"understands ({SCHEMA_VERSION}); upgrade phasegate"
            )
        # Future versions add their migrations here, from ``version`` up to SCHEMA_VERSION.

    def schema_version(self) -> int:
        """The schema version recorded in the store."""
        meta = self._t["meta"]
        with map_driver_errors(self.name), self._read_engine.connect() as connection:
            self.ensure_schema()
            return int(
                connection.execute(
                    sa.select(meta.c.value).where(meta.c.key == "schema_version")
                ).scalar_one()
            )

    # -- plumbing ------------------------------------------------------------------------

    def _write(self, fn: Callable[[Connection], T]) -> T:
        if self._committer is not None:
            return self._committer.submit(fn)
        with self._write_engine.begin() as connection:
            return fn(connection)

    def _read(self) -> AbstractContextManager[Connection]:
        return self._read_engine.connect()

    def _insert_ignore(self, table: sa.Table) -> Any:
        """INSERT that does nothing on a key conflict, built once per table."""
        statement = self._ignore_cache.get(table.name)
        if statement is None:
            if self.dialect == "sqlite":
                statement = sqlite_insert(table).on_conflict_do_nothing()
            elif self.dialect == "postgresql":
                statement = pg_insert(table).on_conflict_do_nothing()
            else:
                statement = sa.insert(table).prefix_with("IGNORE")
            self._ignore_cache[table.name] = statement
        return statement

    def _build_upsert(self) -> Any:
        """The sticky-success upsert of a completion, built once; rows come at execution."""
        table = self._t["completions"]
        updated = ["correlation_id", "metadata", "occurred_at", "status"]
        if self.dialect == "mysql":
            mysql_insert = mysql_dialect.insert(table)
            new = mysql_insert.inserted
            replace = _replace_condition(table, new)
            # MySQL assigns left to right: status goes last so the condition sees the old row.
            return mysql_insert.on_duplicate_key_update(
                [(name, sa.case((replace, new[name]), else_=table.c[name])) for name in updated]
            )
        insert = sqlite_insert(table) if self.dialect == "sqlite" else pg_insert(table)
        return insert.on_conflict_do_update(
            index_elements=["pipeline", "run_key", "phase", "processor"],
            set_={name: insert.excluded[name] for name in updated},
            where=_replace_condition(table, insert.excluded),
        )

    def _completion_row(self, completion: Completion) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "run_key": completion.run_key,
            "phase": completion.phase,
            "processor": completion.processor,
            "status": completion.status.value,
            "correlation_id": completion.correlation_id,
            "metadata": completion.metadata_json(),
            "occurred_at": completion.occurred_at,
        }

    def _write_completion(self, connection: Connection, completion: Completion) -> int:
        row = self._completion_row(completion)
        changed = connection.execute(self._upsert, row).rowcount
        connection.execute(self._insert_ignore(self._t["history"]), row)
        self._note_run(connection, completion.run_key, completion.occurred_at)
        return changed

    def _note_run(self, connection: Connection, run_key: str, seen_at: datetime) -> None:
        connection.execute(
            self._insert_ignore(self._t["runs"]),
            {"pipeline": self.pipeline, "run_key": run_key, "first_seen_at": seen_at},
        )

    @staticmethod
    def _to_completion(row: Any) -> Completion:
        return Completion(
            phase=row.phase,
            run_key=row.run_key,
            processor=row.processor,
            status=Status(row.status),
            occurred_at=row.occurred_at,
            correlation_id=row.correlation_id,
            metadata=frozen_metadata(json.loads(row.metadata)),
        )

    @staticmethod
    def _to_entry(row: Any) -> OutboxEntry:
        return OutboxEntry(
            trigger=Trigger.from_message(json.loads(row.message)),
            claimed_at=row.claimed_at,
            delivered_at=row.delivered_at,
            attempts=row.attempts,
            last_error=row.last_error,
            next_attempt_at=row.next_attempt_at,
        )

    # -- the capability protocols (interim: the stores package is being rewritten) ------

    @property
    def capabilities(self) -> frozenset[Capability]:
        """Every capability."""
        return ALL_CAPABILITIES

    def record_completions(
        self, completions: Sequence[Completion]
    ) -> Mapping[PhaseRun, frozenset[str]]:
        """Record a batch; answer each phase-run's successes after it."""
        answer: dict[PhaseRun, frozenset[str]] = {}
        for completion in completions:
            answer[completion.phase_run] = self.record_completion(completion)
        return answer

    def lease_triggers(
        self, owner: str, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[OutboxEntry]:
        """Pending triggers (this interim store does not lease yet)."""
        return self.pending_triggers(now, limit)

    # -- completions ---------------------------------------------------------------------

    @_mapped
    def record_completion(self, completion: Completion) -> frozenset[str]:
        """Upsert ``completion`` (idempotent, ``success`` sticky, history kept) and return
        the processors that have succeeded in that phase of that run, read in the same
        transaction, so the caller needs no second round trip to judge completeness."""

        def write(connection: Connection) -> frozenset[str]:
            self._write_completion(connection, completion)
            params = {
                "pipeline": self.pipeline,
                "run_key": completion.run_key,
                "phase": completion.phase,
            }
            return frozenset(connection.execute(self._succeeded_in_phase, params).scalars())

        return self._write(write)

    @_mapped
    def completions(self, run_key: str, phase: str | None = None) -> list[Completion]:
        """The current completion of each processor for ``run_key`` (one phase, or all)."""
        params = {"pipeline": self.pipeline, "run_key": run_key, "phase": phase}
        query = self._completions_of_run if phase is None else self._completions_of_phase
        with self._read() as connection:
            return [self._to_completion(row) for row in connection.execute(query, params).all()]

    @_mapped
    def history(self, run_key: str) -> list[Completion]:
        """Every distinct report received for ``run_key``, oldest first."""
        table = self._t["history"]
        query = (
            sa.select(table)
            .where(table.c.pipeline == self.pipeline, table.c.run_key == run_key)
            .order_by(table.c.occurred_at, table.c.phase, table.c.processor)
        )
        with self._read() as connection:
            return [self._to_completion(row) for row in connection.execute(query).all()]

    @_mapped
    def list_runs(self, limit: int = 50) -> list[str]:
        """The most recent run keys, newest (greatest) first."""
        table = self._t["runs"]
        query = (
            sa.select(table.c.run_key)
            .where(table.c.pipeline == self.pipeline)
            .order_by(table.c.run_key.desc())
            .limit(limit)
        )
        with self._read() as connection:
            return list(connection.execute(query).scalars())

    # -- triggers and the outbox ---------------------------------------------------------

    def _trigger_row(self, trigger: Trigger) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "run_key": trigger.run_key,
            "phase": trigger.phase,
            "trigger_id": trigger.trigger_id,
            "message": trigger.to_json(),
            "claimed_at": trigger.triggered_at,
            "attempts": 0,
        }

    @_mapped
    def claim_trigger(self, trigger: Trigger) -> bool:
        """Atomically claim ``trigger`` and put it in the outbox; ``True`` for the one winner."""

        def claim(connection: Connection) -> bool:
            inserted = connection.execute(
                self._insert_ignore(self._t["triggers"]), self._trigger_row(trigger)
            ).rowcount
            self._note_run(connection, trigger.run_key, trigger.triggered_at)
            return bool(inserted == 1)

        return self._write(claim)

    @_mapped
    def triggers(self, run_key: str) -> list[OutboxEntry]:
        """Every claimed trigger of ``run_key``."""
        table = self._t["triggers"]
        query = (
            sa.select(table)
            .where(table.c.pipeline == self.pipeline, table.c.run_key == run_key)
            .order_by(table.c.claimed_at)
        )
        with self._read() as connection:
            return [self._to_entry(row) for row in connection.execute(query).all()]

    @_mapped
    def pending_triggers(self, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Undelivered triggers whose next attempt is due at ``now``, oldest first."""
        table = self._t["triggers"]
        query = (
            sa.select(table)
            .where(
                table.c.pipeline == self.pipeline,
                table.c.delivered_at.is_(None),
                sa.or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
            )
            .order_by(table.c.claimed_at)
            .limit(limit)
        )
        with self._read() as connection:
            return [self._to_entry(row) for row in connection.execute(query).all()]

    @_mapped
    def mark_delivered(self, trigger_id: str, delivered_at: datetime) -> None:
        """Record that a transport accepted ``trigger_id`` (idempotent)."""
        table = self._t["triggers"]
        statement = (
            sa.update(table)
            .where(table.c.trigger_id == trigger_id, table.c.delivered_at.is_(None))
            .values(delivered_at=delivered_at, last_error=None, next_attempt_at=None)
        )
        self._write(lambda connection: connection.execute(statement).rowcount)

    @_mapped
    def record_delivery_failure(
        self, trigger_id: str, error: str, next_attempt_at: datetime
    ) -> None:
        """Count a failed delivery attempt and when to try again."""
        table = self._t["triggers"]
        statement = (
            sa.update(table)
            .where(table.c.trigger_id == trigger_id, table.c.delivered_at.is_(None))
            .values(
                attempts=table.c.attempts + 1,
                last_error=error[:1024],
                next_attempt_at=next_attempt_at,
            )
        )
        self._write(lambda connection: connection.execute(statement).rowcount)

    # -- phase history and timeouts ------------------------------------------------------

    def _execution_row(self, execution: PhaseExecution) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "run_key": execution.run_key,
            "phase": execution.phase,
            "started_at": execution.started_at,
            "triggered_at": execution.triggered_at,
            "duration_seconds": execution.duration_seconds,
            "processors": json.dumps(list(execution.processors)),
            "reason": execution.reason.value,
            "trigger_id": execution.trigger_id,
        }

    @_mapped
    def record_phase_execution(self, execution: PhaseExecution) -> None:
        """Keep how a phase went (idempotent per phase and run key)."""
        statement, row = self._insert_ignore(self._t["executions"]), self._execution_row(execution)
        self._write(lambda connection: connection.execute(statement, row).rowcount)

    @staticmethod
    def _to_execution(row: Any) -> PhaseExecution:
        return PhaseExecution(
            phase=row.phase,
            run_key=row.run_key,
            started_at=row.started_at,
            triggered_at=row.triggered_at,
            processors=tuple(json.loads(row.processors)),
            reason=TriggerReason(row.reason),
            trigger_id=row.trigger_id,
        )

    @_mapped
    def phase_executions(
        self, phase: str | None = None, limit: int = 100, run_key: str | None = None
    ) -> list[PhaseExecution]:
        """Recent phase executions (of one phase, of one run), newest first."""
        table = self._t["executions"]
        query = sa.select(table).where(table.c.pipeline == self.pipeline)
        if phase is not None:
            query = query.where(table.c.phase == phase)
        if run_key is not None:
            query = query.where(table.c.run_key == run_key)
        query = query.order_by(table.c.triggered_at.desc()).limit(limit)
        with self._read() as connection:
            return [self._to_execution(row) for row in connection.execute(query).all()]

    def _timeout_row(self, report: TimeoutReport) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "run_key": report.run_key,
            "phase": report.phase,
            "started_at": report.started_at,
            "reported_at": report.reported_at,
            "missing": json.dumps(list(report.missing)),
        }

    @_mapped
    def record_timeout(self, report: TimeoutReport) -> bool:
        """Record that a phase timed out; ``True`` only the first time."""
        statement, row = self._insert_ignore(self._t["timeouts"]), self._timeout_row(report)
        return self._write(lambda connection: connection.execute(statement, row).rowcount == 1)

    @staticmethod
    def _to_timeout(row: Any) -> TimeoutReport:
        return TimeoutReport(
            phase=row.phase,
            run_key=row.run_key,
            started_at=row.started_at,
            reported_at=row.reported_at,
            missing=tuple(json.loads(row.missing)),
        )

    @_mapped
    def timeouts(self, run_key: str) -> list[TimeoutReport]:
        """The timeout reports of ``run_key``."""
        table = self._t["timeouts"]
        query = sa.select(table).where(
            table.c.pipeline == self.pipeline, table.c.run_key == run_key
        )
        with self._read() as connection:
            return [self._to_timeout(row) for row in connection.execute(query).all()]

    # -- reconciliation ------------------------------------------------------------------

    @_mapped
    def export_records(self, first_run_key: str, last_run_key: str) -> RecordSet:
        """Everything stored for run keys in ``[first_run_key, last_run_key]``."""

        def select(name: str) -> Any:
            table = self._t[name]
            return sa.select(table).where(
                table.c.pipeline == self.pipeline,
                table.c.run_key.between(first_run_key, last_run_key),
            )

        with self._read() as connection:
            return RecordSet(
                completions=tuple(
                    self._to_completion(r) for r in connection.execute(select("completions")).all()
                ),
                history=tuple(
                    self._to_completion(r) for r in connection.execute(select("history")).all()
                ),
                triggers=tuple(
                    self._to_entry(r) for r in connection.execute(select("triggers")).all()
                ),
                executions=tuple(
                    self._to_execution(r) for r in connection.execute(select("executions")).all()
                ),
                timeouts=tuple(
                    self._to_timeout(r) for r in connection.execute(select("timeouts")).all()
                ),
            )

    @_mapped
    def import_records(self, records: RecordSet) -> int:
        """Merge ``records`` in idempotently (success wins); returns how many rows changed."""
        triggers = self._t["triggers"]

        def merge(connection: Connection) -> int:
            changed = 0
            for completion in records.completions:
                changed += connection.execute(
                    self._upsert, self._completion_row(completion)
                ).rowcount
                self._note_run(connection, completion.run_key, completion.occurred_at)
            for completion in records.history:
                changed += connection.execute(
                    self._insert_ignore(self._t["history"]), self._completion_row(completion)
                ).rowcount
            for entry in records.triggers:
                row = self._trigger_row(entry.trigger)
                row.update(claimed_at=entry.claimed_at, attempts=entry.attempts)
                row.update(delivered_at=entry.delivered_at, last_error=entry.last_error)
                row.update(next_attempt_at=entry.next_attempt_at)
                changed += connection.execute(self._insert_ignore(triggers), row).rowcount
                self._note_run(connection, entry.trigger.run_key, entry.claimed_at)
                if entry.delivered_at is not None:
                    changed += connection.execute(
                        sa.update(triggers)
                        .where(
                            triggers.c.trigger_id == entry.trigger.trigger_id,
                            triggers.c.delivered_at.is_(None),
                        )
                        .values(delivered_at=entry.delivered_at, next_attempt_at=None)
                    ).rowcount
            for execution in records.executions:
                changed += connection.execute(
                    self._insert_ignore(self._t["executions"]), self._execution_row(execution)
                ).rowcount
            for report in records.timeouts:
                changed += connection.execute(
                    self._insert_ignore(self._t["timeouts"]), self._timeout_row(report)
                ).rowcount
            return max(changed, 0)

        return self._write(merge)

    # -- health and lifecycle ------------------------------------------------------------

    def ping(self) -> None:
        """A cheap round trip that raises when the store cannot be used."""
        with map_driver_errors(self.name), self._read() as connection:
            connection.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        """Finish queued writes, then release every connection."""
        if self._committer is not None:
            self._committer.close()
        for engine in self.engines:
            engine.dispose()

    def drop_all(self) -> None:
        """Drop every phasegate table (tests and ``reset`` tooling only)."""
        with map_driver_errors(self.name), self._write_engine.begin() as connection:
            self._metadata.drop_all(connection)
        self._schema_ready.clear()

    def __repr__(self) -> str:
        return f"SqlStore(name={self.name!r}, url={redact_url(self.url)!r})"
