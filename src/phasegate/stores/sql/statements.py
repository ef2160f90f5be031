"""SQL built once per store: Core statements for the store's own calls, and driver SQL
compiled once (with the connected dialect) for the writer's ``executemany``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from phasegate.model import Status
from phasegate.stores.sql.bound import BoundStatement, DriverSql, compile_for_driver
from phasegate.stores.sql.rows import time_reader

_SUCCESS: sa.ColumnElement[str] = sa.literal_column(f"'{Status.SUCCESS.value}'")
# Joins processor names in one answer row: SQLite's char(31) (no name can hold it, see
# config.NAME_PATTERN; one that does is read row by row).
NAMES_SEPARATOR = "\x1f"
COMPLETION_COLUMNS = (
    "pipeline",
    "run_key",
    "phase",
    "processor",
    "attempt",
    "status",
    "correlation_id",
    "metadata",
    "occurred_at",
)


RUNS_COLUMNS = ("pipeline", "run_key", "first_seen_at")
TRIGGER_COLUMNS = (
    "run_key",
    "message",
    "claimed_at",
    "delivered_at",
    "attempts",
    "last_error",
    "next_attempt_at",
    "lease_owner",
    "lease_expires_at",
)
# The columns read by run key with driver SQL, per table (rows.driver_to_* convert them).
READ_COLUMNS = {"completions": COMPLETION_COLUMNS, "triggers": TRIGGER_COLUMNS}


ENTRY_FIELDS = ("run_key", "phase", "attempt", *TRIGGER_COLUMNS[1:])
"""What an imported outbox entry sets on the row it merges into (all but the key)."""
MERGE_COLUMNS = {"attempts_below": "attempts", **{f"set_{name}": name for name in ENTRY_FIELDS}}
LEASE_COLUMNS = {"now": "lease_expires_at", "owner": "lease_owner", "until": "lease_expires_at"}


def merge_entry(table: sa.Table, *, delivered: bool) -> Any:
    """An imported entry over the row of its trigger id: a delivered copy wins over an
    undelivered row or one with fewer attempts; an undelivered one only over an
    undelivered row with fewer attempts. Parameters: ``pipeline``, ``trigger_id``,
    ``attempts_below`` and ``set_<column>``."""
    more_attempts = table.c.attempts < sa.bindparam("attempts_below")
    undelivered = table.c.delivered_at.is_(None)
    wins = sa.or_(undelivered, more_attempts) if delivered else sa.and_(undelivered, more_attempts)
    return (
        sa.update(table)
        .where(
            table.c.pipeline == sa.bindparam("pipeline"),
            table.c.trigger_id == sa.bindparam("trigger_id"),
            wins,
        )
        .values({name: sa.bindparam(f"set_{name}") for name in ENTRY_FIELDS})
    )


def _by_id(table: sa.Table, count: int | None) -> sa.ColumnElement[bool]:
    """One trigger by id (``trigger_id``), or ``count`` of them (``k0 ..``)."""
    if count is None:
        return table.c.trigger_id == sa.bindparam("trigger_id")
    return table.c.trigger_id.in_([sa.bindparam(f"k{i}") for i in range(count)])


def _undelivered(table: sa.Table, *, by_ids: bool) -> sa.ColumnElement[bool]:
    """``delivered_at IS NULL``; in a statement on many ids (SQLite's, see
    ``outbox.by_ids``) with SQLite's unary ``+`` on the column, which keeps the planner
    off the pending index (a scan of every undelivered row) and on the key."""
    if not by_ids:
        return table.c.delivered_at.is_(None)
    return sa.literal_column(f"+{table.name}.delivered_at", table.c.delivered_at.type).is_(None)


def lease_one(table: sa.Table, count: int | None = None) -> Any:
    """Lease a trigger (or ``count``, see :func:`_by_id`) if it is still due (as
    :func:`due` says at ``now``). Parameters: ``pipeline``, the id(s), ``now``,
    ``owner``, ``until``."""
    return (
        sa.update(table)
        .where(
            _by_id(table, count),
            *due(table, sa.bindparam("pipeline"), sa.bindparam("now"), by_ids=count is not None),
        )
        .values(lease_owner=sa.bindparam("owner"), lease_expires_at=sa.bindparam("until"))
    )


PENDING_COLUMNS = {"now": "lease_expires_at", "limit": "attempts"}


def pending(table: sa.Table, *, skip_locked: bool) -> Any:
    """Undelivered, due, unleased outbox rows (:data:`TRIGGER_COLUMNS`), oldest first.
    Parameters: ``pipeline``, ``now``, ``limit``; locked rows skipped where asked."""
    query = (
        sa.select(*(table.c[column] for column in TRIGGER_COLUMNS))
        .where(*due(table, sa.bindparam("pipeline"), sa.bindparam("now")))
        .order_by(table.c.claimed_at, table.c.trigger_id)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )
    return query.with_for_update(skip_locked=True) if skip_locked else query


def undelivered_update(table: sa.Table, count: int | None = None, **values: Any) -> Any:
    """Set ``values`` on an undelivered trigger (or ``count``, see :func:`_by_id`) and
    drop its lease. Parameters: ``pipeline``, the id(s) and those of ``values``."""
    return (
        sa.update(table)
        .where(
            table.c.pipeline == sa.bindparam("pipeline"),
            _by_id(table, count),
            _undelivered(table, by_ids=count is not None),
        )
        .values(lease_owner=sa.null(), lease_expires_at=sa.null(), **values)
    )


def _delivered(table: sa.Table, count: int | None) -> tuple[Any, dict[str, str]]:
    statement = undelivered_update(
        table,
        count,
        delivered_at=sa.bindparam("at"),
        last_error=sa.null(),
        next_attempt_at=sa.null(),
    )
    return statement, {"at": "delivered_at"}


def _failed(table: sa.Table, count: int | None) -> tuple[Any, dict[str, str]]:
    statement = undelivered_update(
        table,
        count,
        attempts=table.c.attempts + sa.literal_column("1"),
        last_error=sa.bindparam("error"),
        next_attempt_at=sa.bindparam("retry_at"),
    )
    return statement, {"error": "last_error", "retry_at": "next_attempt_at"}


_OUTBOX_UPDATES: dict[str, Callable[[sa.Table, int | None], tuple[Any, Mapping[str, str]]]] = {
    "lease": lambda table, count: (lease_one(table, count), LEASE_COLUMNS),
    "delivered": _delivered,
    "failed": _failed,
}


def due(
    table: sa.Table, pipeline: Any, now: Any, *, by_ids: bool = False
) -> list[sa.ColumnElement[bool]]:
    """What makes an outbox row due for delivery at ``now``: undelivered, its retry due,
    its lease (if any) expired (``by_ids``: see :func:`_undelivered`)."""
    return [
        table.c.pipeline == pipeline,
        _undelivered(table, by_ids=by_ids),
        sa.or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
        sa.or_(table.c.lease_expires_at.is_(None), table.c.lease_expires_at <= now),
    ]


class DriverStatements:
    """Driver SQL of the claim path, compiled once for a dialect: the INSERTs that ignore a
    conflict (claims, runs, executions, copies) and the read of completions by run key."""

    def __init__(
        self, tables: dict[str, sa.Table], dialect: sa.Dialect, *, max_params: int = 999
    ) -> None:
        self._dialect = dialect
        # Parameters one statement may take (SQLite's limit: 999 before 3.32, 32,766 since).
        self.max_params = max_params
        # SQLite claims several triggers in one statement (see outbox.claim_all).
        self.multirow = dialect.name == "sqlite"
        self.ignore = {
            name: BoundStatement(
                insert_ignore(tables[name], dialect.name),
                tables[name],
                dialect,
                max_params=max_params,
            )
            for name in ("triggers", "runs", "executions")
        }
        triggers = tables["triggers"]
        self.merge = {
            delivered: BoundStatement(
                merge_entry(triggers, delivered=delivered), triggers, dialect, MERGE_COLUMNS
            )
            for delivered in (False, True)
        }
        self.pending = {
            skip_locked: BoundStatement(
                pending(triggers, skip_locked=skip_locked), triggers, dialect, PENDING_COLUMNS
            )
            for skip_locked in (False, True)
        }
        self._tables = tables
        self._of_ids: dict[tuple[str, int | None], BoundStatement] = {}
        self.lease = self.of_ids("lease")  # one trigger's
        self._tables = tables
        self._of_keys: dict[tuple[str, int], DriverSql] = {}

    def of_ids(self, kind: str, count: int | None = None) -> BoundStatement:
        """The ``kind`` update (``lease``, ``delivered`` or ``failed``) of one trigger
        (parameter ``trigger_id``) or, given ``count``, of that many (``k0 ..``) at once."""
        found = self._of_ids.get((kind, count))
        if found is None:
            triggers = self._tables["triggers"]
            statement, columns = _OUTBOX_UPDATES[kind](triggers, count)
            ids = {f"k{i}": "trigger_id" for i in range(count or 0)}
            found = self._of_ids[kind, count] = BoundStatement(
                statement, triggers, self._dialect, {**columns, **ids}
            )
        return found

    def of_keys(self, name: str, count: int) -> DriverSql:
        """The rows of table ``name`` (:data:`READ_COLUMNS` of it) for ``count`` run keys:
        parameters ``k0 .. k{count-1}`` and ``pipeline``."""
        found = self._of_keys.get((name, count))
        if found is None:
            table = self._tables[name]
            keys: list[sa.BindParameter[str]] = [sa.bindparam(f"k{i}") for i in range(count)]
            query = sa.select(*(table.c[column] for column in READ_COLUMNS[name])).where(
                table.c.pipeline == sa.bindparam("pipeline"), table.c.run_key.in_(keys)
            )
            found = self._of_keys[name, count] = compile_for_driver(query, self._dialect)
        return found

    def held_triggers(self, count: int) -> DriverSql:
        """Which of ``count`` trigger ids (``k0 .. k{count-1}``) are claimed in
        ``pipeline``."""
        found = self._of_keys.get(("held", count))
        if found is None:
            table = self._tables["triggers"]
            ids: list[sa.BindParameter[str]] = [sa.bindparam(f"k{i}") for i in range(count)]
            query = sa.select(table.c.trigger_id).where(
                table.c.pipeline == sa.bindparam("pipeline"), table.c.trigger_id.in_(ids)
            )
            found = self._of_keys["held", count] = compile_for_driver(query, self._dialect)
        return found


def replace_condition(table: sa.Table, new: Any) -> sa.ColumnElement[bool]:
    """``model.prefer`` in SQL: success wins; the earliest success, the latest failure."""
    return sa.or_(
        sa.and_(
            table.c.status != _SUCCESS,
            sa.or_(new.status == _SUCCESS, new.occurred_at >= table.c.occurred_at),
        ),
        sa.and_(
            table.c.status == _SUCCESS,
            new.status == _SUCCESS,
            new.occurred_at < table.c.occurred_at,
        ),
    )


def insert_ignore(table: sa.Table, dialect: str) -> Any:
    """INSERT that does nothing on a key conflict."""
    if dialect == "sqlite":
        return sqlite_insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    return sa.insert(table).prefix_with("IGNORE")


def sticky_upsert(table: sa.Table, dialect: str) -> Any:
    """The sticky-success upsert of a completion; rows come at execution."""
    updated = ["correlation_id", "metadata", "occurred_at", "status"]
    if dialect == "mysql":
        mysql_insert = mysql_dialect.insert(table)
        new = mysql_insert.inserted
        replace = replace_condition(table, new)
        # MySQL assigns left to right: status goes last so the condition sees the old row.
        return mysql_insert.on_duplicate_key_update(
            [(name, sa.case((replace, new[name]), else_=table.c[name])) for name in updated]
        )
    insert = sqlite_insert(table) if dialect == "sqlite" else pg_insert(table)
    return insert.on_conflict_do_update(
        index_elements=["pipeline", "run_key", "phase", "processor", "attempt"],
        set_={name: insert.excluded[name] for name in updated},
        where=replace_condition(table, insert.excluded),
    )


class Statements:
    """The Core statements of one store, built once."""

    def __init__(self, tables: dict[str, sa.Table], dialect: sa.Dialect, pipeline: str) -> None:
        self.tables = tables
        self.dialect = dialect.name
        self.pipeline = pipeline
        self.upsert = sticky_upsert(tables["completions"], dialect.name)
        self.ignore = {name: insert_ignore(table, dialect.name) for name, table in tables.items()}
        self.driver = DriverStatements(tables, dialect)
        completions = tables["completions"]
        self.completions_of_run = (
            sa.select(completions)
            .where(
                completions.c.pipeline == sa.bindparam("pipeline"),
                completions.c.run_key == sa.bindparam("run_key"),
            )
            .order_by(completions.c.phase, completions.c.processor, completions.c.attempt)
        )
        self.completions_of_phase = self.completions_of_run.where(
            completions.c.phase == sa.bindparam("phase")
        )

    def of_runs(self, name: str, first: str, last: str) -> Any:
        """Every row of table ``name`` for run keys in ``[first, last]``."""
        table = self.tables[name]
        return sa.select(table).where(
            table.c.pipeline == self.pipeline, table.c.run_key.between(first, last)
        )

    def of_run_keys(self, name: str, run_keys: Sequence[str]) -> Any:
        """Every row of table ``name`` for the run keys given."""
        table = self.tables[name]
        return sa.select(table).where(
            table.c.pipeline == self.pipeline, table.c.run_key.in_(list(run_keys))
        )

    def of_run(self, name: str, run_key: str) -> Any:
        """Every row of table ``name`` for ``run_key``."""
        table = self.tables[name]
        return sa.select(table).where(table.c.pipeline == self.pipeline, table.c.run_key == run_key)


class WriterSql:
    """The writer's driver SQL, compiled once for a connected dialect."""

    def __init__(
        self, tables: dict[str, sa.Table], dialect: sa.Dialect, *, max_params: int = 999
    ) -> None:
        self._dialect = dialect
        # Parameters one statement may take (SQLite's limit: 999 before 3.32, 32,766 since).
        self.max_params = max_params
        self._completions = tables["completions"]
        self.upsert = compile_for_driver(sticky_upsert(self._completions, dialect.name), dialect)
        self.history = compile_for_driver(insert_ignore(tables["history"], dialect.name), dialect)
        self.runs = compile_for_driver(insert_ignore(tables["runs"], dialect.name), dialect)
        self.read_time = time_reader(dialect)
        self._answers: dict[tuple[int, bool], DriverSql] = {}
        # On SQLite, several rows per statement (see execute_rows).
        self.multirow = dialect.name == "sqlite"

    def answers(self, count: int, *, grouped: bool | None = None) -> DriverSql:
        """The standing reports of ``count`` run keys (``k0 .. k{count-1}`` and pipeline),
        per phase-run and status: run key, phase, attempt, status, how many processors,
        their names and the earliest time. On SQLite (``grouped``) a row per phase-run
        and status, the names joined by :data:`NAMES_SEPARATOR` (each row a driver
        fetches there is a release and a retake of the GIL); elsewhere a row per report
        (a count of 1 and its processor)."""
        grouped = self.multirow if grouped is None else grouped
        found = self._answers.get((count, grouped))
        if found is None:
            table = self._completions
            keys: list[sa.BindParameter[str]] = [sa.bindparam(f"k{i}") for i in range(count)]
            named = (table.c.run_key, table.c.phase, table.c.attempt, table.c.status)
            columns: tuple[Any, ...] = (
                (
                    sa.func.count(),
                    sa.func.group_concat(table.c.processor, sa.literal_column("char(31)")),
                    sa.func.min(table.c.occurred_at),
                )
                if grouped
                else (sa.literal_column("1"), table.c.processor, table.c.occurred_at)
            )
            query = sa.select(*named, *columns).where(
                table.c.pipeline == sa.bindparam("pipeline"), table.c.run_key.in_(keys)
            )
            if grouped:
                query = query.group_by(*named)
            found = self._answers[count, grouped] = compile_for_driver(query, self._dialect)
        return found
