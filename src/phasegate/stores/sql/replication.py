"""Export by run-key range and idempotent import, in one transaction each.

The import follows :class:`~phasegate.stores.memory.MemoryStore`: per completion success
wins (else the latest); history, claims, executions and timeouts already held are kept;
an outbox copy replaces the held entry only when it was delivered and the held one was
not, or when both agree on delivery and the copy counts more attempts; a copy never
carries a lease.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from phasegate.errors import StoreError
from phasegate.model import Completion, OutboxEntry, RecordSet, prefer
from phasegate.stores.base import merged_records
from phasegate.stores.sql import rows as r
from phasegate.stores.sql.outbox import held_triggers
from phasegate.stores.sql.statements import ENTRY_FIELDS, Statements


def export_records(connection: Connection, s: Statements, first: str, last: str) -> RecordSet:
    """Everything stored for run keys in ``[first, last]``."""
    return _export(connection, lambda name: s.of_runs(name, first, last))


def export_runs(connection: Connection, s: Statements, run_keys: Sequence[str]) -> RecordSet:
    """Everything stored for ``run_keys``: one query per table per :data:`EXPORT_KEYS`."""
    keys = sorted(set(run_keys))
    chunks = [keys[start : start + EXPORT_KEYS] for start in range(0, len(keys), EXPORT_KEYS)]
    return merged_records(
        _export(connection, functools.partial(s.of_run_keys, run_keys=chunk)) for chunk in chunks
    )


EXPORT_KEYS = 500  # run keys per IN list


def _export(connection: Connection, query: Callable[[str], Any]) -> RecordSet:
    def rows(name: str) -> Any:
        return connection.execute(query(name))

    return RecordSet(
        completions=tuple(
            sorted((r.to_completion(row) for row in rows("completions")), key=lambda c: c.key)
        ),
        history=tuple(
            sorted(
                (r.to_completion(row) for row in rows("history")),
                key=lambda c: (c.occurred_at, c.key),
            )
        ),
        triggers=tuple(
            sorted(
                (r.to_entry(row) for row in rows("triggers")),
                key=lambda e: (e.claimed_at, e.trigger.trigger_id),
            )
        ),
        executions=tuple(r.to_execution(row) for row in rows("executions")),
        timeouts=tuple(r.to_timeout(row) for row in rows("timeouts")),
    )


def import_records(connection: Connection, s: Statements, records: RecordSet) -> None:
    """Merge ``records`` in idempotently (see the module's rules)."""
    pipeline = s.pipeline
    merged: dict[tuple[str, str, str, int], Completion] = {}
    for completion in records.completions:
        merged[completion.key] = prefer(merged.get(completion.key), completion)
    _many(connection, s.upsert, [r.completion_row(pipeline, c) for c in merged.values()])
    _many(connection, s.ignore["history"], [r.completion_row(pipeline, c) for c in records.history])
    s.driver.ignore["executions"].execute_many(
        connection, [r.execution_row(pipeline, e) for e in records.executions]
    )
    _many(connection, s.ignore["timeouts"], [r.timeout_row(pipeline, t) for t in records.timeouts])
    _merge_entries(connection, s, records.triggers)
    seen = {c.run_key: c.occurred_at for c in (*records.history, *records.completions)}
    seen.update((e.trigger.run_key, e.claimed_at) for e in records.triggers)
    runs = [{"pipeline": pipeline, "run_key": k, "first_seen_at": at} for k, at in seen.items()]
    s.driver.ignore["runs"].execute_many(connection, runs)


def _many(connection: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(statement, rows)


def _merge_entries(connection: Connection, s: Statements, entries: Sequence[OutboxEntry]) -> None:
    """Each entry inserted where its trigger is new, else merged into the row holding it.
    On SQLite (the transaction holding the write lock, see ``outbox.claim_all``) the new
    ones go in with one statement: copies of claims arrive by the batch."""
    ids = {entry.trigger.trigger_id for entry in entries}
    if not (s.driver.multirow and len(entries) > 1 and len(ids) == len(entries)):
        for entry in entries:
            _merge_entry(connection, s, entry)
        return
    held = held_triggers(connection, s, sorted(ids))
    fresh = [r.entry_row(s.pipeline, e) for e in entries if e.trigger.trigger_id not in held]
    inserted = s.driver.ignore["triggers"].execute_many(connection, fresh)
    if inserted != len(fresh):
        raise StoreError(
            f"import: {len(fresh) - inserted} of {len(fresh)} outbox entries read as new "
            "were written by another writer before this one inserted them"
        )
    for entry in entries:
        if entry.trigger.trigger_id in held:
            _merge_held(connection, s, entry, r.entry_row(s.pipeline, entry))


def _merge_entry(connection: Connection, s: Statements, entry: OutboxEntry) -> None:
    row = r.entry_row(s.pipeline, entry)
    if s.driver.ignore["triggers"].execute(connection, row) != 1:
        _merge_held(connection, s, entry, row)


def _merge_held(
    connection: Connection, s: Statements, entry: OutboxEntry, row: dict[str, Any]
) -> None:
    """Merge ``entry`` (its outbox ``row``) into the row that holds its trigger."""
    merge = {f"set_{name}": row[name] for name in ENTRY_FIELDS}
    merge.update(pipeline=s.pipeline, trigger_id=entry.trigger.trigger_id)
    merge["attempts_below"] = entry.attempts
    s.driver.merge[entry.delivered].execute(connection, merge)
