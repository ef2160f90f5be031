"""A writer's batch in SQL: its completion rows inserted (several rows per statement on
SQLite), then every phase-run of its run keys answered with one query."""

from __future__ import annotations

from typing import Any

from phasegate.model import Answered, Status
from phasegate.stores.sql.driver import DriverCursor
from phasegate.stores.sql.statements import DriverSql, WriterSql

Found = dict[tuple[str, str, int], Answered]  # by (phase, run_key, attempt)
Row = tuple[Any, ...]  # a completion in COMPLETION_COLUMNS order, driver-ready
_SUCCESS = Status.SUCCESS.value


# Rows per statement on SQLite, largest first: a batch is cut into these sizes, so few
# statement texts exist (the driver's statement cache keeps them all); a size whose
# parameters would pass the connection's limit is skipped.
_CHUNKS = (128, 64, 32, 16, 8, 4, 2, 1)


def insert_rows(
    cursor: DriverCursor,
    sql: WriterSql,
    statement: DriverSql,
    rows: list[Row],
    columns: tuple[str, ...],
) -> None:
    """Insert ``rows``: with ``executemany``, or on SQLite several rows per statement
    (``executemany`` binds and steps each row as a statement of its own, releasing and
    retaking the GIL each time; in the library batch benchmark, statements of many rows
    cost 15-25 % less CPU per report)."""
    params = statement.many(rows, columns)
    if not sql.multirow or len(params) == 1:
        cursor.execute(statement.sql, params, many=True)
        return
    most = sql.max_params // len(columns)
    start = 0
    for size in _CHUNKS:
        while size <= most and len(params) - start >= size:
            chunk = params[start : start + size]
            cursor.execute(sql.rows_of(statement, size), [v for row in chunk for v in row])
            start += size


def read_answers(cursor: DriverCursor, sql: WriterSql, pipeline: str, run_keys: list[str]) -> Found:
    """Each phase-run of ``run_keys``: its successes, failures and earliest report."""
    query = sql.answers(len(run_keys))
    params: dict[str, Any] = {"pipeline": pipeline}
    params.update((f"k{i}", key) for i, key in enumerate(run_keys))
    # Per phase-run: succeeded, failed, earliest stored time (compared as the driver
    # returns it: a datetime, or SQLite's fixed-width text, which sorts as time does).
    found: dict[tuple[str, str, int], tuple[set[str], set[str], list[Any]]] = {}
    for run_key, phase, attempt, processor, status, occurred_at in cursor.execute(
        query.sql, query.params(params)
    ).fetchall():
        group = found.get((phase, run_key, attempt))
        if group is None:
            group = found[(phase, run_key, attempt)] = (set(), set(), [occurred_at])
        elif occurred_at < group[2][0]:
            group[2][0] = occurred_at
        (group[0] if status == _SUCCESS else group[1]).add(processor)
    read_time = sql.read_time
    return {
        key: Answered(succeeded, failed, read_time(first[0]))
        for key, (succeeded, failed, first) in found.items()
    }
