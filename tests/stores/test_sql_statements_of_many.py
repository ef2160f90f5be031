"""SQLite's statements of many rows on the writer's thread: claims, copies, leases and
delivery marks of several triggers in one statement each, and the answers of a batch
grouped per phase-run. Each keeps the answers of the one-row statements it replaces."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from test_sql import statements

from phasegate.errors import StoreError
from phasegate.model import OutboxEntry, PhaseExecution, PhaseRun, RecordSet, Status
from phasegate.stores.sql.outbox import claim_all
from phasegate.stores.sql.schema import build_tables
from phasegate.stores.sql.statements import DriverStatements
from store_records import RUN, T0, completion, trigger
from support import backends

SQLITE = backends("sqlite")
KEYS = [f"2026-02-{day:02d}" for day in range(1, 9)]


def _recorder(sent: list[str]) -> Callable[[str, Any], None]:
    def hook(sql: str, _params: Any) -> None:
        sent.append(" ".join(sql.split()[:3]))

    return hook


@SQLITE
def test_claims_of_many_triggers_are_one_read_and_one_insert(make_store: Any) -> None:
    """Eight claims, two of them already held: one query reads which are held, one
    statement inserts the other six; the answers are those of eight one-row claims."""
    store = make_store()
    store.ensure_schema()
    held = [trigger(run_key=KEYS[1]), trigger(run_key=KEYS[5])]
    assert store.claim_triggers(held) == [True, True]
    sent: list[str] = []
    with statements(store, _recorder(sent)):
        won = store.claim_triggers([trigger(run_key=key) for key in KEYS])
    assert won == [key not in (KEYS[1], KEYS[5]) for key in KEYS]
    assert sent.count("INSERT INTO phasegate_triggers") == 1
    assert sent.count("SELECT phasegate_triggers.trigger_id FROM") == 1
    assert all(len(store.triggers(key)) == 1 for key in KEYS)


@SQLITE
def test_a_claim_the_read_missed_is_refused_not_won_twice(make_store: Any) -> None:
    """The insert's count checks the read: claims told that nothing of theirs is held
    (a read that missed a claim) raise, naming the count, instead of answering a held
    trigger as won; the transaction's claims are undone with the error."""
    store = make_store()
    store.ensure_schema()
    assert store.claim_triggers([trigger(run_key=KEYS[0])]) == [True]
    wanted = [trigger(run_key=key) for key in KEYS[:3]]

    def claim(connection: Any) -> list[bool]:
        return claim_all(connection, store._s, wanted, held=set())

    with pytest.raises(StoreError, match="1 of 3 trigger"):
        store.writer.submit_work(claim).result(timeout=10)
    assert store.triggers(KEYS[1]) == []  # the claims of the failed call were undone
    assert store.claim_triggers(wanted) == [False, True, True]


@SQLITE
def test_leases_and_marks_of_many_triggers_are_one_update_each(make_store: Any) -> None:
    """Five due triggers leased by one UPDATE, three marked delivered by another (one
    already delivered keeps its first time), the rest failed by a third."""
    store = make_store()
    store.ensure_schema()
    claimed = [trigger(run_key=key, at=T0 + timedelta(seconds=i)) for i, key in enumerate(KEYS)]
    store.claim_triggers(claimed)
    ids = [t.trigger_id for t in claimed]
    store.mark_delivered_many(ids[:1], T0 + timedelta(minutes=1))
    sent: list[str] = []
    until = T0 + timedelta(minutes=10)
    with statements(store, _recorder(sent)):
        leased = store.lease_triggers("me", T0 + timedelta(minutes=2), until, limit=5)
    assert [e.trigger.trigger_id for e in leased] == ids[1:6]
    assert all(e.lease_owner == "me" and e.lease_expires_at == until for e in leased)
    assert sent.count("UPDATE phasegate_triggers SET") == 1
    sent.clear()
    with statements(store, _recorder(sent)):
        store.mark_delivered_many(ids[:4], T0 + timedelta(minutes=3))
    assert sent.count("UPDATE phasegate_triggers SET") == 1
    times = {key: store.triggers(key)[0].delivered_at for key in KEYS[:4]}
    assert times == {KEYS[0]: T0 + timedelta(minutes=1)} | {
        key: T0 + timedelta(minutes=3) for key in KEYS[1:4]
    }
    assert all(store.triggers(key)[0].lease_owner is None for key in KEYS[:4])
    again = store.lease_triggers("you", T0 + timedelta(minutes=20), until, limit=10)
    assert [e.trigger.trigger_id for e in again] == ids[4:]


def test_updates_of_many_ids_look_triggers_up_by_key() -> None:
    """SQLite's planner would take the pending index for ``delivered_at IS NULL`` (a
    scan of every undelivered trigger); the statements on many ids keep to the key."""
    tables = build_tables(sa.MetaData())
    driver = DriverStatements(tables, sqlite.dialect())
    engine = sa.create_engine("sqlite://")
    tables["triggers"].metadata.create_all(engine)
    now = datetime(2026, 2, 1, tzinfo=UTC)
    values = {"pipeline": "p", "now": now, "owner": "o", "until": now, "at": now}
    values |= {"error": "e", "retry_at": now, **{f"k{i}": f"t{i}" for i in range(5)}}
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        for kind in ("lease", "delivered", "failed"):
            statement = driver.of_ids(kind, 5)
            plan = raw.execute(
                "EXPLAIN QUERY PLAN " + statement.sql, statement.params(values)
            ).fetchall()
            assert [row[3] for row in plan] == [
                "SEARCH phasegate_triggers USING INDEX sqlite_autoindex_phasegate_triggers_1 "
                "(pipeline=? AND trigger_id=?)"
            ], kind


@SQLITE
def test_copies_of_many_entries_insert_the_new_and_merge_the_held(make_store: Any) -> None:
    """An import of eight outbox entries, three held already: the five new go in with one
    statement, the three held are merged (a delivered copy wins over an undelivered row,
    an undelivered copy leaves a delivered row as it is)."""
    store = make_store()
    store.ensure_schema()
    store.claim_triggers([trigger(run_key=key) for key in KEYS[:2]])
    store.claim_triggers([trigger(run_key=KEYS[2])])
    store.mark_delivered_many([trigger(run_key=KEYS[2]).trigger_id], T0 + timedelta(hours=1))
    delivered = T0 + timedelta(minutes=5)
    copies = [
        OutboxEntry(trigger(run_key=key), T0, delivered if key == KEYS[0] else None) for key in KEYS
    ]
    sent: list[str] = []
    with statements(store, _recorder(sent)):
        store.import_records(RecordSet(triggers=tuple(copies)))
    assert sent.count("INSERT INTO phasegate_triggers") == 1
    found = {key: store.triggers(key)[0].delivered_at for key in KEYS}
    assert found == {
        KEYS[0]: delivered,
        KEYS[1]: None,
        KEYS[2]: T0 + timedelta(hours=1),
    } | dict.fromkeys(KEYS[3:])


@SQLITE
def test_a_batch_is_answered_with_a_row_per_phase_run_and_status(make_store: Any) -> None:
    """The writer's answers come grouped (a row a phase-run and status, the names
    joined), equal to the answers of the reports written one at a time; a stored name
    holding the separator (no configuration allows one) is read row by row instead."""
    store = make_store()
    store.ensure_schema()
    late = T0 + timedelta(seconds=30)
    reports = [completion(f"p{i}", at=T0 + timedelta(seconds=i)) for i in range(12)]
    reports += [completion("f1", Status.FAILED, at=late)]
    answer = store.record_completions(reports)
    assert answer == {PhaseRun("phase2", RUN): {f"p{i}" for i in range(12)}}
    [(run, answered)] = answer.items()
    assert answered.failed == {"f1"}
    assert answered.first_at == T0
    with store.engines[0].begin() as connection:
        connection.exec_driver_sql(
            "UPDATE phasegate_completions SET processor = 'odd' || char(31) || 'name' "
            "WHERE processor = 'p0'"
        )
    again = store.record_completions([completion("p1", at=late)])
    assert again[run] == {"odd\x1fname", *(f"p{i}" for i in range(1, 12))}


@SQLITE
def test_claims_in_the_write_take_what_they_read_not_a_second_read(make_store: Any) -> None:
    """Claims made in a write's transaction after reading their runs' triggers decide
    from that read: no query of held ids, one INSERT for both triggers."""
    store = make_store()
    store.ensure_schema()
    store.claim_triggers([trigger(run_key=KEYS[0])])
    wanted = [trigger(run_key=key) for key in KEYS[:3]]

    def then(claims: Any, _answers: Any) -> list[bool]:
        claims.triggers_of_runs(KEYS[:3])
        won: list[bool] = claims.claim_triggers(wanted, [_execution(t) for t in wanted])
        return won

    sent: list[str] = []
    with statements(store, _recorder(sent)):
        answer = store.submit_completions([completion(run_key=KEYS[1])], then).result(10)
    assert answer.followed == [False, True, True]
    assert sent.count("SELECT phasegate_triggers.trigger_id FROM") == 0
    assert sent.count("INSERT INTO phasegate_triggers") == 1
    assert [len(store.triggers(key)) for key in KEYS[:3]] == [1, 1, 1]


def _execution(claimed: Any) -> PhaseExecution:
    return PhaseExecution(
        phase=claimed.phase,
        run_key=claimed.run_key,
        started_at=T0,
        triggered_at=T0,
        processors=claimed.processors,
        reason=claimed.reason,
        trigger_id=claimed.trigger_id,
        attempt=claimed.attempt,
    )
