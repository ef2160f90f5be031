"""The SQL store's claims, leases and reads of many runs, as functions of a connection
(each runs inside whatever transaction the store gives it: the writer's on SQLite, a
short one of its own on a server database)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from phasegate.model import OutboxEntry, PhaseExecution, Trigger
from phasegate.stores.sql import rows as r
from phasegate.stores.sql.driver import DriverCursor
from phasegate.stores.sql.statements import READ_COLUMNS, Statements

CHUNK = 500  # run keys per IN list


def oldest_first(entry: OutboxEntry) -> tuple[datetime, str]:
    """How outbox entries are ordered: claim time, then trigger id."""
    return entry.claimed_at, entry.trigger.trigger_id


# How each table read by run key is converted from the driver's tuples.
_CONVERTERS: dict[str, Callable[[tuple[Any, ...], r.TimeReader], Any]] = {
    "completions": r.driver_to_completion,
    "triggers": r.driver_to_entry,
}


def rows_of_runs(
    connection: Connection,
    s: Statements,
    table: str,
    run_keys: Sequence[str],
    read_time: r.TimeReader,
) -> dict[str, list[Any]]:
    """The records of ``table`` for each run key, on driver SQL compiled once: each row (the
    table's ``READ_COLUMNS``) converted from the driver's tuple, one query per
    :data:`CHUNK` keys."""
    convert = _CONVERTERS[table]
    found: dict[str, list[Any]] = {key: [] for key in run_keys}
    keys = sorted(found)
    at = READ_COLUMNS[table].index("run_key")
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        query = s.driver.of_keys(table, len(chunk))
        params: dict[str, Any] = {"pipeline": s.pipeline}
        params.update((f"k{i}", key) for i, key in enumerate(chunk))
        cursor = DriverCursor(connection)
        try:
            for values in cursor.execute(query.sql, query.params(params)).fetchall():
                found[values[at]].append(convert(values, read_time))
        finally:
            cursor.close()
    return found


def claim_all(
    connection: Connection,
    s: Statements,
    triggers: Sequence[Trigger],
    executions: Sequence[PhaseExecution] | None = None,
) -> list[bool]:
    """Claim each trigger by its id (in id order, so concurrent claimers cannot deadlock)
    and note its run; ``True`` for each one this call won, in the order given. With
    ``executions`` (one per trigger), each won trigger's execution record is kept in the
    same transaction."""
    won: dict[str, bool] = {}
    claim, note_run = s.driver.ignore["triggers"], s.driver.ignore["runs"]
    for trigger in sorted(triggers, key=lambda t: t.trigger_id):
        won[trigger.trigger_id] = claim.execute(connection, r.trigger_row(s.pipeline, trigger)) == 1
    seen = {t.run_key: t.triggered_at for t in triggers}
    note_run.execute_many(
        connection,
        [
            {"pipeline": s.pipeline, "run_key": run_key, "first_seen_at": seen_at}
            for run_key, seen_at in sorted(seen.items())
        ],
    )
    if executions is not None:
        s.driver.ignore["executions"].execute_many(
            connection,
            [
                r.execution_row(s.pipeline, execution)
                for trigger, execution in zip(triggers, executions, strict=True)
                if won[trigger.trigger_id]
            ],
        )
    return [won[t.trigger_id] for t in triggers]


def lease(
    connection: Connection,
    s: Statements,
    owner: str,
    now: datetime,
    until: datetime,
    limit: int,
    *,
    skip_locked: bool,
) -> list[OutboxEntry]:
    """Lease up to ``limit`` due triggers to ``owner``: each by a conditional UPDATE on
    rows picked ``FOR UPDATE SKIP LOCKED`` where the database has it; oldest first."""
    candidates = s.pending(now, limit)
    if skip_locked:
        candidates = candidates.with_for_update(skip_locked=True)
    leased: list[OutboxEntry] = []
    lease_one = s.driver.lease
    for row in connection.execute(candidates).all():
        params = {
            "pipeline": s.pipeline,
            "trigger_id": row.trigger_id,
            "now": now,
            "owner": owner,
            "until": until,
        }
        if lease_one.execute(connection, params) == 1:
            leased.append(r.to_entry(row).leased_to(owner, until))
    return sorted(leased, key=oldest_first)
