"""The SQL store's claims, leases and reads of many runs, as functions of a connection
(each runs inside whatever transaction the store gives it: the writer's on SQLite, a
short one of its own on a server database)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from phasegate.errors import StoreError
from phasegate.model import Answered, OutboxEntry, PhaseExecution, PhaseRun, Trigger
from phasegate.stores.base import ClaimsAfter
from phasegate.stores.sql import rows as r
from phasegate.stores.sql.driver import DriverCursor, TransactionLost
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
    held: Collection[str] | None = None,
) -> list[bool]:
    """Claim each trigger by its id (in id order, so concurrent claimers cannot deadlock)
    and note its run; ``True`` for each one this call won, in the order given (a trigger
    given twice is won, if at all, by its first asking, as by one compare-and-set after
    the other). With ``executions`` (one per trigger), each won trigger's execution
    record is kept in the same transaction. ``held``: the ids of every trigger of these
    triggers' runs, read earlier in this transaction (SQLite then need not read them
    again)."""
    ordered = sorted(triggers, key=lambda t: t.trigger_id)
    if s.driver.multirow and len(ordered) > 1:
        won = _claim_together(connection, s, ordered, held)
    else:
        claim = s.driver.ignore["triggers"]
        won = {}
        for t in ordered:
            if t.trigger_id not in won:
                won[t.trigger_id] = claim.execute(connection, r.trigger_row(s.pipeline, t)) == 1
    answers = _first_asking(triggers, won)
    seen = {t.run_key: t.triggered_at for t in triggers}
    s.driver.ignore["runs"].execute_many(
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
                for execution, first in zip(executions, answers, strict=True)
                if first
            ],
        )
    return answers


def _first_asking(triggers: Sequence[Trigger], won: Mapping[str, bool]) -> list[bool]:
    """Each trigger's answer, in the order given: ``won`` for its id at its first asking,
    ``False`` at any later one."""
    asked: set[str] = set()
    answers = []
    for trigger in triggers:
        answers.append(won[trigger.trigger_id] and trigger.trigger_id not in asked)
        asked.add(trigger.trigger_id)
    return answers


def _claim_together(
    connection: Connection,
    s: Statements,
    ordered: Sequence[Trigger],
    held: Collection[str] | None,
) -> dict[str, bool]:
    """SQLite's claims: the ids already held read with one query (unless given), the
    others inserted with one statement (not one statement each, which on the writer's
    thread means a release and a retake of the GIL per trigger).

    The transaction holds the database's write lock from its ``BEGIN IMMEDIATE`` (a
    deferred one would fail to take it after another connection's write), so no other
    claim can come between the read and the insert; the insert's count checks it."""
    ids = sorted({t.trigger_id for t in ordered})
    if held is None:
        held = held_triggers(connection, s, ids)
    fresh: dict[str, Trigger] = {}
    for trigger in ordered:
        if trigger.trigger_id not in held:
            fresh.setdefault(trigger.trigger_id, trigger)
    rows = [r.trigger_row(s.pipeline, trigger) for trigger in fresh.values()]
    inserted = s.driver.ignore["triggers"].execute_many(connection, rows)
    if inserted != len(rows):
        raise StoreError(
            f"claims: {len(rows) - inserted} of {len(rows)} trigger(s) read as unclaimed "
            "were claimed by another writer before this one inserted them"
        )
    return {trigger_id: trigger_id in fresh for trigger_id in ids}


def held_triggers(connection: Connection, s: Statements, ids: list[str]) -> set[str]:
    """Which of ``ids`` are claimed."""
    held: set[str] = set()
    cursor = DriverCursor(connection)
    try:
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            query = s.driver.held_triggers(len(chunk))
            params: dict[str, Any] = {"pipeline": s.pipeline}
            params.update((f"k{i}", trigger_id) for i, trigger_id in enumerate(chunk))
            held.update(row[0] for row in cursor.execute(query.sql, query.params(params)))
    finally:
        cursor.close()
    return held


class ClaimsIn:
    """Triggers read and claimed on ``connection``, in the transaction it holds (the
    writer's, after a batch of completions: see ``SqlStore.submit_completions``), inside a
    savepoint taken on first use: :meth:`close` keeps what was claimed, or undoes it."""

    def __init__(
        self,
        connection: Connection,
        s: Statements,
        read_time: r.TimeReader,
        shared: dict[Any, Any],
    ) -> None:
        self._connection = connection
        self._s = s
        self._read_time = read_time
        self._cursor: DriverCursor | None = None
        # Phase-runs decided earlier in this transaction: the trigger id that stands.
        self.decided: dict[PhaseRun, str] = shared.setdefault("decided", {})
        self._decided_before = dict(self.decided)  # restored when the claims are undone
        # The run keys whose triggers were read here, and those triggers' ids.
        self._read_keys: set[str] = set()
        self._read_ids: set[str] = set()

    def _begin(self) -> None:
        if self._cursor is None:
            self._cursor = DriverCursor(self._connection)
            self._cursor.execute("SAVEPOINT phasegate_claims", ())

    def triggers_of_runs(self, run_keys: Sequence[str]) -> dict[str, list[OutboxEntry]]:
        self._begin()
        found = rows_of_runs(self._connection, self._s, "triggers", run_keys, self._read_time)
        self._read_keys.update(found)
        self._read_ids.update(e.trigger.trigger_id for group in found.values() for e in group)
        return {key: sorted(group, key=oldest_first) for key, group in found.items()}

    def claim_triggers(
        self, triggers: Sequence[Trigger], executions: Sequence[PhaseExecution]
    ) -> list[bool]:
        self._begin()
        read = all(t.run_key in self._read_keys for t in triggers)
        won = claim_all(
            self._connection, self._s, triggers, executions, self._read_ids if read else None
        )
        self._read_ids.update(t.trigger_id for t in triggers)  # each one is held now
        return won

    def close(self, *, keep: bool) -> None:
        """End the savepoint, if one was taken: release it, or first roll back to it (and
        forget what this call noted as decided, which the rollback undid). A savepoint that
        cannot be undone leaves the transaction untrustworthy: :class:`TransactionLost`."""
        if not keep:
            self.decided.clear()
            self.decided.update(self._decided_before)
        cursor = self._cursor
        if cursor is None:
            return
        if keep:
            cursor.execute("RELEASE SAVEPOINT phasegate_claims", ())  # failing: undone next
        else:
            try:
                cursor.execute("ROLLBACK TO SAVEPOINT phasegate_claims", ())
                cursor.execute("RELEASE SAVEPOINT phasegate_claims", ())
            except Exception as exc:
                self._cursor = None
                cursor.close()
                raise TransactionLost(f"the claims' savepoint could not be undone: {exc}") from exc
        self._cursor = None
        cursor.close()


def followed_by(
    then: ClaimsAfter, s: Statements, read_time: r.TimeReader
) -> Callable[[Connection, dict[PhaseRun, Answered], dict[Any, Any]], Any]:
    """The writer's ``then`` work for ``then(claims, answers)``: run in the batch's
    transaction once its rows are written and answered (``answers``: the store's answers
    for the batch's phase-runs), it reads and claims triggers through ``claims``, kept,
    or undone to their savepoint if it raises; what it returns, or raised, is the
    answer's ``followed``."""

    def follow(
        connection: Connection, answers: dict[PhaseRun, Answered], shared: dict[Any, Any]
    ) -> Any:
        claims = ClaimsIn(connection, s, read_time, shared)
        try:
            followed = then(claims, answers)
            claims.close(keep=True)
        except BaseException:
            claims.close(keep=False)
            raise
        return followed

    return follow


def lease(
    connection: Connection,
    s: Statements,
    owner: str,
    now: datetime,
    until: datetime,
    limit: int,
    *,
    skip_locked: bool,
    read_time: r.TimeReader,
) -> list[OutboxEntry]:
    """Lease up to ``limit`` due triggers to ``owner``: each by a conditional UPDATE on
    rows picked ``FOR UPDATE SKIP LOCKED`` where the database has it; oldest first. On
    SQLite, whose transaction holds the write lock (see :func:`claim_all`), the rows
    picked are all still due: one UPDATE leases them, its count checking it."""
    picked = pending(connection, s, now, limit, read_time, skip_locked=skip_locked)
    params = {"pipeline": s.pipeline, "now": now, "owner": owner, "until": until}
    if s.driver.multirow and len(picked) > 1:
        ids = [entry.trigger.trigger_id for entry in picked]
        if by_ids(connection, s, "lease", ids, params) != len(ids):
            raise StoreError(
                f"lease: of {len(ids)} triggers read as due, some were leased or marked "
                "by another writer before this one leased them"
            )
        return sorted((entry.leased_to(owner, until) for entry in picked), key=oldest_first)
    leased: list[OutboxEntry] = []
    for entry in picked:
        params["trigger_id"] = entry.trigger.trigger_id
        if s.driver.lease.execute(connection, params) == 1:
            leased.append(entry.leased_to(owner, until))
    return sorted(leased, key=oldest_first)


def pending(
    connection: Connection,
    s: Statements,
    now: datetime,
    limit: int,
    read_time: r.TimeReader,
    *,
    skip_locked: bool = False,
) -> list[OutboxEntry]:
    """Undelivered triggers due at ``now`` with no live lease, oldest first."""
    query = s.driver.pending[skip_locked]
    params = {"pipeline": s.pipeline, "now": now, "limit": limit}
    return [r.driver_to_entry(values, read_time) for values in query.rows(connection, params)]


def update_undelivered(
    connection: Connection, s: Statements, kind: str, trigger_ids: Sequence[str], **values: Any
) -> None:
    """Run the ``kind`` update (``delivered`` or ``failed``) on each undelivered trigger
    of ``trigger_ids``: in id order, or on SQLite with one statement."""
    ids = sorted(set(trigger_ids))
    params = {"pipeline": s.pipeline, **values}
    if s.driver.multirow and len(ids) > 1:
        by_ids(connection, s, kind, ids, params)
        return
    s.driver.of_ids(kind).execute_many(connection, [{**params, "trigger_id": i} for i in ids])


def by_ids(
    connection: Connection, s: Statements, kind: str, ids: Sequence[str], params: dict[str, Any]
) -> int:
    """The ``kind`` update on every trigger of ``ids`` (one statement per :data:`CHUNK`,
    as ``s.driver.of_ids`` builds it); the rows it changed."""
    changed = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        keyed = {**params, **{f"k{i}": trigger_id for i, trigger_id in enumerate(chunk)}}
        changed += s.driver.of_ids(kind, len(chunk)).execute(connection, keyed)
    return changed
