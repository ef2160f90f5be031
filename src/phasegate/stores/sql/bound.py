"""Driver SQL: statements compiled once for a dialect and sent straight to the DBAPI
cursor (:class:`DriverSql`, :class:`BoundStatement`), and inserts of many rows (several
rows per statement on SQLite)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from phasegate.stores.sql.driver import DriverCursor
from phasegate.stores.sql.rows import time_binder
from phasegate.stores.sql.schema import UTCDateTime


class DriverSql:
    """One statement compiled for the driver, with how to order a row's parameters."""

    __slots__ = ("_orders", "names", "sql")

    def __init__(self, sql: str, names: tuple[str, ...] | None) -> None:
        self.sql = sql
        self.names = names  # positional parameter order; None for named styles
        # How to pick a row's values in parameter order (None: already in order).
        self._orders: dict[tuple[str, ...], Callable[[tuple[Any, ...]], Any] | None] = {}

    def params(self, row: Mapping[str, Any]) -> Any:
        """``row`` in the driver's parameter form."""
        if self.names is None:
            return row
        return tuple(row[name] for name in self.names)

    def many(self, rows: Sequence[tuple[Any, ...]], columns: tuple[str, ...]) -> list[Any]:
        """Rows given as tuples in ``columns`` order, in the driver's form for executemany."""
        if self.names is None:
            return [dict(zip(columns, row, strict=True)) for row in rows]
        pick = self._order(columns)
        if pick is None:
            return list(rows)
        return list(map(pick, rows))

    def _order(self, columns: tuple[str, ...]) -> Callable[[tuple[Any, ...]], Any] | None:
        if columns not in self._orders:
            assert self.names is not None
            order = tuple(columns.index(name) for name in self.names)
            self._orders[columns] = (
                None if order == tuple(range(len(columns))) else operator.itemgetter(*order)
            )
        return self._orders[columns]


def _binder(column_type: Any, dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    """How ``dialect`` binds a value of ``column_type``; times by :func:`time_binder`
    (the same text as Core's, without its per-value overhead on SQLite)."""
    if isinstance(column_type, UTCDateTime):
        return time_binder(dialect)
    bind: Callable[[Any], Any] | None = column_type.dialect_impl(dialect).bind_processor(dialect)
    return bind


class BoundStatement:
    """A statement compiled once for the driver that binds a row's values as Core would
    (each column's bind processor), without Core's per-execution work.

    A parameter is bound as the column of its name, or as the column ``columns`` names
    for it (a WHERE parameter beside a SET one of the same column). One the dialect adds
    with a value of its own (SQLite's ``OFFSET 0`` after a bound ``LIMIT``) keeps it."""

    __slots__ = ("_binds", "_fixed", "_max_params", "_named", "_names", "sql")

    def __init__(
        self,
        statement: Any,
        table: sa.Table,
        dialect: sa.Dialect,
        columns: Mapping[str, str] | None = None,
        *,
        max_params: int | None = None,
    ) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        # An insert given ``max_params`` on SQLite takes several rows per statement.
        self._max_params = max_params if dialect.name == "sqlite" else None
        self._named = not compiled.positional
        names = tuple(compiled.binds) if self._named else tuple(compiled.positiontup)
        self._names = names
        of = columns or {}
        bound = [name for name in names if of.get(name, name) in table.c]
        self._fixed = {
            name: compiled.binds[name].effective_value for name in names if name not in bound
        }
        self._binds = tuple(
            _binder(table.c[of.get(name, name)].type, dialect) if name in bound else None
            for name in names
        )

    def params(self, row: Mapping[str, Any]) -> Any:
        """``row`` (parameter name to value) bound for the driver."""
        if self._fixed:
            row = {**self._fixed, **row}
        values = [
            value if bind is None or value is None else bind(value)
            for value, bind in zip(map(row.__getitem__, self._names), self._binds, strict=True)
        ]
        if self._named:
            return dict(zip(self._names, values, strict=True))
        return tuple(values)

    def execute(self, connection: Connection, row: Mapping[str, Any]) -> int:
        """Run it for one row; its row count (0 when a conflict ignored an insert)."""
        cursor = DriverCursor(connection)
        try:
            return int(cursor.execute(self.sql, self.params(row)).rowcount)
        finally:
            cursor.close()

    def rows(self, connection: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run a query; the driver's rows."""
        cursor = DriverCursor(connection)
        try:
            found: list[tuple[Any, ...]] = cursor.execute(self.sql, self.params(params)).fetchall()
            return found
        finally:
            cursor.close()

    def execute_many(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run it for several rows, in one ``executemany`` or, for an insert built with
        ``max_params`` on SQLite, several rows per statement; the rows it changed."""
        if not rows:
            return 0
        cursor = DriverCursor(connection)
        try:
            return execute_rows(
                cursor,
                self.sql,
                [self.params(row) for row in rows],
                multirow=self._max_params is not None,
                max_params=self._max_params or 0,
            )
        finally:
            cursor.close()


def compile_for_driver(statement: Any, dialect: sa.Dialect) -> DriverSql:
    """Compile ``statement`` once for ``dialect``'s driver."""
    compiled = statement.compile(dialect=dialect)
    names = tuple(compiled.positiontup) if compiled.positional else None
    return DriverSql(str(compiled), names)


# Rows per statement on SQLite: up to 128, a multiple of 16 above 16, so few statement
# texts exist (the driver's statement cache keeps them all) and a batch of up to 16 rows
# is one statement; never more parameters than the connection's limit.
_MOST_ROWS = 128
_STEP = 16


def execute_rows(
    cursor: DriverCursor, sql: str, params: list[Any], *, multirow: bool, max_params: int
) -> int:
    """Run the one-row insert ``sql`` for each row of driver-ready ``params``; the rows it
    inserted. With ``executemany``, or with ``multirow`` (SQLite) several rows per
    statement: ``executemany`` binds and steps each row as a statement of its own,
    releasing and retaking the GIL each time (in the library batch benchmark, statements
    of many rows cost 15-25 % less CPU per report)."""
    if not params:
        return 0
    if not multirow or len(params) == 1:
        return int(cursor.execute(sql, params, many=True).rowcount)
    most = min(_MOST_ROWS, max(1, max_params // len(params[0])))
    inserted = start = 0
    while start < len(params):
        size = min(len(params) - start, most)
        if size > _STEP:
            size -= size % _STEP
        chunk = params[start : start + size]
        flat = [value for row in chunk for value in row]
        inserted += cursor.execute(rows_sql(sql, size), flat).rowcount
        start += size
    return inserted


@functools.lru_cache(maxsize=256)
def rows_sql(sql: str, count: int) -> str:
    """``sql`` (an insert of one row of qmark parameters) taking ``count`` rows."""
    head, values, tail = _one_row_values(sql)
    return head + ", ".join([values] * count) + tail


def _one_row_values(sql: str) -> tuple[str, str, str]:
    """An insert's text around its one ``VALUES (?, ..., ?)`` group: before, group, after."""
    start = sql.index(" VALUES (") + len(" VALUES ")
    end = sql.index(")", start) + 1
    group = sql[start:end]
    assert set(group) <= set("(?, )"), f"not a one-row insert of qmark parameters: {sql}"
    return sql[:start], group, sql[end:]
