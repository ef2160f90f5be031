"""A writer's batch in SQL: its completion rows inserted (several rows per statement on
SQLite), then every phase-run of its run keys answered with one query."""

from __future__ import annotations

from typing import Any

from phasegate.model import Answered, Status
from phasegate.stores.sql.bound import DriverSql, execute_rows
from phasegate.stores.sql.driver import DriverCursor
from phasegate.stores.sql.statements import NAMES_SEPARATOR, WriterSql

Found = dict[tuple[str, str, int], Answered]  # by (phase, run_key, attempt)
Row = tuple[Any, ...]  # a completion in COMPLETION_COLUMNS order, driver-ready
_SUCCESS = Status.SUCCESS.value


def insert_rows(
    cursor: DriverCursor,
    sql: WriterSql,
    statement: DriverSql,
    rows: list[Row],
    columns: tuple[str, ...],
) -> None:
    """Insert ``rows`` (tuples in ``columns`` order), several per statement on SQLite."""
    params = statement.many(rows, columns)
    execute_rows(cursor, statement.sql, params, multirow=sql.multirow, max_params=sql.max_params)


def read_answers(
    cursor: DriverCursor,
    sql: WriterSql,
    pipeline: str,
    run_keys: list[str],
    *,
    grouped: bool | None = None,
) -> Found:
    """Each phase-run of ``run_keys``: its successes, failures and earliest report."""
    query = sql.answers(len(run_keys), grouped=grouped)
    params: dict[str, Any] = {"pipeline": pipeline}
    params.update((f"k{i}", key) for i, key in enumerate(run_keys))
    # Per phase-run: succeeded, failed, earliest stored time (compared as the driver
    # returns it: a datetime, or SQLite's fixed-width text, which sorts as time does).
    found: dict[tuple[str, str, int], tuple[set[str], set[str], list[Any]]] = {}
    for run_key, phase, attempt, status, count, names, first in cursor.execute(
        query.sql, query.params(params)
    ).fetchall():
        group = found.get((phase, run_key, attempt))
        if group is None:
            group = found[(phase, run_key, attempt)] = (set(), set(), [first])
        elif first < group[2][0]:
            group[2][0] = first
        processors = names.split(NAMES_SEPARATOR) if count > 1 else (names,)
        if len(processors) != count:  # a name holding the separator: read row by row
            return read_answers(cursor, sql, pipeline, run_keys, grouped=False)
        (group[0] if status == _SUCCESS else group[1]).update(processors)
    read_time = sql.read_time
    return {
        key: Answered(succeeded, failed, read_time(first[0]))
        for key, (succeeded, failed, first) in found.items()
    }
