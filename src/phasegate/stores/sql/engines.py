"""Engines by URL and the one place driver errors become phasegate errors.

``sqlite:///path[?synchronous=FULL|NORMAL|EXTRA|OFF]`` runs in WAL mode with durable
commits (``FULL``) by default, with one engine for writes (``BEGIN IMMEDIATE``) and one
for reads; ``postgresql://...[?schema=NAME]`` uses psycopg 3; ``mysql://`` and
``mariadb://`` use PyMySQL at ``READ COMMITTED``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.url import URL

from phasegate.drivers import require_driver
from phasegate.errors import ConfigError, StoreError, TransientStoreError
from phasegate.stores.sql.driver import SQLITE_WRITE_BEGIN

T = TypeVar("T")

# Claims and timeouts are decided by an INSERT's row count, which SQLAlchemy keeps only
# on request.
EXECUTION_OPTIONS = {"preserve_rowcount": True}
SYNCHRONOUS_MODES = frozenset({"FULL", "NORMAL", "EXTRA", "OFF"})

TRANSIENT_ERRORS = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)


def _short(exc: BaseException) -> str:
    origin = getattr(exc, "orig", None) or exc
    text = str(origin).strip().splitlines()
    return text[0] if text else type(origin).__name__


def translate_error(store: str, exc: BaseException) -> StoreError | None:
    """The phasegate error for a driver/SQLAlchemy error, or ``None`` if it is not one."""
    if isinstance(exc, TRANSIENT_ERRORS) or getattr(exc, "connection_invalidated", False):
        return TransientStoreError(f"{store}: {_short(exc)}")
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return StoreError(f"{store}: {_short(exc)}")
    return None


@contextmanager
def map_driver_errors(store: str) -> Iterator[None]:
    """Turn SQLAlchemy/driver errors into ``TransientStoreError`` or ``StoreError``."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        mapped = translate_error(store, exc)
        assert mapped is not None
        raise mapped from exc


# A deadlock victim's transaction was rolled back whole: running it again is safe.
_DEADLOCK_CODES = frozenset({1213, 1205, "40P01", "40001"})


def is_deadlock(exc: BaseException) -> bool:
    """Whether ``exc`` is a database deadlock or lock-wait timeout (MariaDB, PostgreSQL)."""
    origin = getattr(exc, "orig", None)
    code = getattr(origin, "sqlstate", None) or (getattr(origin, "args", None) or (None,))[0]
    return isinstance(exc, sa.exc.DBAPIError) and code in _DEADLOCK_CODES


def retry_deadlocks(fn: Callable[[], T], attempts: int = 5) -> T:
    """Run the transaction ``fn`` again when the database chose it as a deadlock victim."""
    for _ in range(attempts - 1):
        try:
            return fn()
        except sa.exc.DBAPIError as exc:
            if not is_deadlock(exc):
                raise
    return fn()


def is_data_error(error: BaseException) -> bool:
    """Whether a failed write belongs to its data (retry it alone), not to the store."""
    return isinstance(error, StoreError) and not isinstance(error, TransientStoreError)


def redact_url(url: str) -> str:
    """``url`` with any password replaced, safe to log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.rsplit("@", maxsplit=1)[-1]


@dataclass(frozen=True, slots=True)
class Engines:
    """The engines of one store: ``write`` and ``read`` are the same outside SQLite."""

    write: Engine
    read: Engine
    schema: str | None = None

    @property
    def dialect(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql``."""
        return self.write.dialect.name

    @property
    def all(self) -> tuple[Engine, ...]:
        """Each distinct engine once."""
        return (self.write,) if self.read is self.write else (self.write, self.read)


def create_engines(raw_url: str, *, name: str, connect_timeout: float = 5.0) -> Engines:
    """The engines for ``raw_url``; a bad URL is a ConfigError naming the store."""
    try:
        url = make_url(raw_url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"{name} store: invalid URL {redact_url(raw_url)!r}") from exc
    backend = url.get_backend_name()
    timeout = max(1, int(connect_timeout))
    if backend == "sqlite":
        return _sqlite_engines(url, name)
    if backend in {"postgresql", "postgres"}:
        return _postgres_engines(url, name, timeout)
    if backend in {"mysql", "mariadb"}:
        require_driver("mysql")
        engine = sa.create_engine(
            url.set(drivername="mysql+pymysql"),
            pool_size=8,
            max_overflow=16,
            pool_recycle=3600,
            connect_args={"connect_timeout": timeout, "charset": "utf8mb4"},
            isolation_level="READ COMMITTED",
            execution_options=EXECUTION_OPTIONS,
        )
        return Engines(engine, engine)
    raise ConfigError(f"{name} store: unsupported database {backend!r}")


def _postgres_engines(url: URL, name: str, timeout: int) -> Engines:
    require_driver("postgresql")
    query = dict(url.query)
    schema = query.pop("schema", None)
    connect_args: dict[str, Any] = {"connect_timeout": timeout}
    if isinstance(schema, str):
        if not schema.replace("_", "").isalnum():
            raise ConfigError(f"{name} store: schema {schema!r} must be alphanumeric")
        connect_args["options"] = f"-c search_path={schema}"
    engine = sa.create_engine(
        url.set(drivername="postgresql+psycopg", query=query),
        pool_size=8,
        max_overflow=16,
        connect_args=connect_args,
        execution_options=EXECUTION_OPTIONS,
    )
    return Engines(engine, engine, schema if isinstance(schema, str) else None)


def sqlite_synchronous(url: URL, name: str) -> str:
    """The ``synchronous`` pragma asked for in ``url`` (``FULL`` unless said otherwise)."""
    synchronous = str(url.query.get("synchronous", "FULL")).upper()
    if synchronous not in SYNCHRONOUS_MODES:
        raise ConfigError(
            f"{name} store: synchronous={synchronous!r}; expected FULL, NORMAL, EXTRA or OFF"
        )
    return synchronous


def _sqlite_engines(url: URL, name: str) -> Engines:
    database = url.database or ""
    if database in {"", ":memory:"}:
        raise ConfigError(
            f"{name} store: sqlite needs a file path (sqlite:///path/to/file.db); "
            "an in-memory database would not survive the process"
        )
    synchronous = sqlite_synchronous(url, name)
    query = {k: v for k, v in url.query.items() if k != "synchronous"}
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    url = url.set(drivername="sqlite+pysqlite", query=query)

    def build(begin: str | None) -> Engine:
        # A pool large enough that concurrent callers never churn overflow connections.
        engine = sa.create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            execution_options=EXECUTION_OPTIONS,
            pool_size=32,
            max_overflow=32,
        )

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event decide how transactions start.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            # WAL is a property of the file, set once by the schema; setting it on every
            # new connection would take a lock each time.
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        if begin is not None:

            @event.listens_for(engine, "begin")
            def _begin(connection: Connection) -> None:
                # Writers take the lock up front so two processes never deadlock on upgrade.
                # A writer batch that already began on the driver (DriverCursor.begin)
                # carries Core work in that same transaction.
                dbapi_connection = connection.connection.dbapi_connection
                if not getattr(dbapi_connection, "in_transaction", False):
                    connection.exec_driver_sql(begin)

        return engine

    # Readers run each SELECT in its own implicit transaction (a consistent snapshot in
    # WAL mode) and skip BEGIN/ROLLBACK round trips.
    return Engines(build(SQLITE_WRITE_BEGIN), build(None))
