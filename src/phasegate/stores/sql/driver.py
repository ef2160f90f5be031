"""Statements sent straight to a connection's DBAPI cursor: the writer's hot path.

``Connection.exec_driver_sql`` builds an execution context and a result per statement,
and ``Connection.begin`` runs the transaction events; for a writer batch of one or two
reports that bookkeeping cost more than the statements. :class:`DriverCursor` keeps
what matters of it: the engine's ``before_cursor_execute`` listeners still see every
statement (fault injection and statement hooks work as before), and a driver error is
raised as SQLAlchemy's own error for it, so ``map_driver_errors`` classifies it exactly
as it classifies Core's.
"""

from __future__ import annotations

import sqlite3
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from phasegate.errors import TransientStoreError


def parameter_limit(connection: Connection) -> int:
    """How many parameters one statement may take on ``connection``: SQLite's own limit
    (999 before 3.32, 32,766 since), asked of the library; the server databases take far
    more than a writer batch binds."""
    if connection.dialect.name != "sqlite":
        return 65_535
    getlimit = getattr(connection.connection.dbapi_connection, "getlimit", None)
    if getlimit is None:
        return 999
    return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


# How a write transaction starts on SQLite: the lock taken up front, so two processes
# never deadlock upgrading a read lock (on the server databases the driver begins).
SQLITE_WRITE_BEGIN = "BEGIN IMMEDIATE"


class TransactionLost(TransientStoreError):
    """The database ended a writer's transaction under it (SQLite rolls a whole
    transaction back on a full disk or an I/O error, even inside a savepoint), or a
    savepoint could not be undone: nothing of the batch may be answered as written."""


class DriverCursor:
    """One DBAPI cursor of ``connection``, used outside SQLAlchemy's execution path."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        dbapi = connection.connection.dbapi_connection
        assert dbapi is not None, "the connection is closed"
        self._dbapi = dbapi
        self._cursor = self._dbapi.cursor()
        self._dialect = connection.dialect
        self._error: type[Exception] = connection.dialect.loaded_dbapi.Error
        self._before = connection.dispatch.before_cursor_execute

    def execute(self, sql: str, params: Any, *, many: bool = False) -> Any:
        """Run ``sql`` with driver-ready ``params`` (a list of them when ``many``); the
        DBAPI cursor, to fetch from."""
        self._before(self._connection, self._cursor, sql, params, None, many)
        try:
            if many:
                self._cursor.executemany(sql, params)
            else:
                self._cursor.execute(sql, params)
        except self._error as exc:
            raise self._wrapped(sql, params, exc, many) from exc
        return self._cursor

    def begin(self) -> None:
        """Start a write transaction (explicitly on SQLite; the driver does elsewhere)."""
        if self._dialect.name == "sqlite":
            self.execute(SQLITE_WRITE_BEGIN, ())

    def transaction_lost(self) -> bool:
        """Whether the database ended the transaction :meth:`begin` started (SQLite only:
        its driver then commits nothing, silently; the server databases raise instead)."""
        if self._dialect.name != "sqlite":
            return False
        try:
            return not self._dbapi.in_transaction
        except self._error:  # a connection closed under it (invalidated) lost it too
            return True

    def commit(self) -> None:
        """Commit what this cursor's connection wrote."""
        try:
            self._dbapi.commit()
        except self._error as exc:
            raise self._wrapped("COMMIT", None, exc, False) from exc

    def close(self) -> None:
        """Release the cursor (the connection stays open)."""
        self._cursor.close()

    def _wrapped(self, sql: str, params: Any, error: Exception, many: bool) -> BaseException:
        # As Core does: a connection the database dropped is never handed out again.
        lost = self._dialect.is_disconnect(cast(Any, error), self._dbapi, self._cursor)
        if lost:
            self._connection.invalidate(error)
        return sa.exc.DBAPIError.instance(
            sql,
            params,
            error,
            self._error,
            connection_invalidated=lost,
            dialect=self._dialect,
            ismulti=many,
        )
