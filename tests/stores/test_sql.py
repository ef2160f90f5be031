"""What only the SQL store has: its schema, engine settings, the batching writer,
driver-level faults and claims raced by separate processes."""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite

from phasegate.errors import StoreError, TransientStoreError
from phasegate.model import PhaseExecution, PhaseRun, Status, Trigger
from phasegate.stores.sql import SCHEMA_VERSION, SqlStore
from phasegate.stores.sql.driver import DriverCursor
from phasegate.stores.sql.engines import is_deadlock, map_driver_errors, retry_deadlocks
from phasegate.stores.sql.rows import driver_completion_row, time_binder
from phasegate.stores.sql.schema import UTCDateTime, build_tables
from phasegate.stores.sql.statements import WriterSql
from phasegate.stores.sql.writer import CompletionWriter
from phasegate.testing import FaultSwitch
from store_records import PIPELINE, RUN, T0, completion, trigger
from support import backends

ALL = backends()
PR = PhaseRun("phase2", RUN)


@contextmanager
def statements(store: SqlStore, hook: Callable[[str, Any], None]) -> Iterator[None]:
    """Call ``hook(sql, parameters)`` before every statement the store's writer engine sends."""

    def listener(_conn: Any, _cursor: Any, sql: str, params: Any, *_rest: Any) -> None:
        hook(sql, params)

    engine = store.engines[0]
    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def _set_version(store: SqlStore, version: int) -> None:
    key = "`key`" if store.dialect == "mysql" else "key"
    with store.engines[0].begin() as connection:
        connection.exec_driver_sql(
            f"UPDATE phasegate_meta SET value = '{version}' WHERE {key} = 'schema_version'"
        )


@ALL
@pytest.mark.parametrize(("version", "message"), [(99, "99 is newer"), (1, "1 is older")])
def test_another_schema_version_is_refused_naming_both(
    make_store: Any, version: int, message: str
) -> None:
    """A store written by another phasegate version is not silently misread."""
    store = make_store()
    assert store.schema_version() == SCHEMA_VERSION == 2
    _set_version(store, version)
    with pytest.raises(StoreError, match=f"schema version {message}.*{SCHEMA_VERSION}"):
        make_store(url=store.url).completions(RUN)


@ALL
def test_a_naive_timestamp_is_refused_alone_and_permanently(make_store: Any) -> None:
    """A timestamp without a timezone is a permanent error for its batch only."""
    store = make_store()
    with pytest.raises(StoreError) as info:
        store.record_completions([completion("ok"), completion(at=datetime(2026, 1, 28, 6))])
    assert not isinstance(info.value, TransientStoreError)
    assert store.record_completions([completion("ok")]) == {PR: {"ok"}}
    assert [c.processor for c in store.completions(RUN)] == ["ok"]


@ALL
def test_record_completion_remains_as_a_shim_over_the_batch(make_store: Any) -> None:
    """The single-completion call answers the successes of its phase-run."""
    store = make_store()
    assert store.record_completion(completion("a")) == {"a"}
    assert store.record_completion(completion("b", Status.FAILED)) == {"a"}


@backends("sqlite")
def test_sqlite_is_durable_by_default_and_tunable(make_store: Any, store_url: Any) -> None:
    """SQLite runs WAL with synchronous=FULL (2) unless the URL asks for NORMAL (1)."""

    def pragmas(store: SqlStore) -> tuple[Any, ...]:
        store.ensure_schema()
        with store.engines[1].connect() as connection:
            return tuple(
                connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout")
            )

    assert pragmas(make_store()) == ("wal", 2, 30000)
    assert pragmas(make_store(url=store_url("n") + "?synchronous=normal"))[1] == 1


# -- the writer --------------------------------------------------------------------------


@ALL
def test_queued_batches_share_one_transaction_and_one_successes_query(make_store: Any) -> None:
    """Five callers queued together: one commit, one successes read, each answered."""
    store = make_store(writer_thread=False)
    store.ensure_schema()
    futures = [store.submit_completions([completion(f"p{i}")]) for i in range(5)]
    seen: list[str] = []
    with statements(store, lambda sql, _: seen.append(sql.split()[0].upper())):
        assert store.writer.run_once() == 5
    assert seen.count("SELECT") == 1
    assert seen.count("COMMIT") <= 1
    assert [f.result(timeout=0) for f in futures][-1] == {PR: {f"p{i}" for i in range(5)}}
    assert (store.writer.batches, store.writer.requests, store.writer.items) == (1, 5, 5)


@ALL
def test_run_keys_already_written_skip_the_runs_insert(make_store: Any) -> None:
    """The second batch of a run key inserts no runs row; a new run key does."""
    store = make_store(writer_thread=False)
    store.ensure_schema()
    runs_inserts: list[str] = []

    def hook(sql: str, _params: Any) -> None:
        if sql.lstrip().upper().startswith("INSERT") and "phasegate_runs" in sql:
            runs_inserts.append(sql)

    for run_key in (RUN, RUN, "2026-01-29"):
        future = store.submit_completions([completion(run_key=run_key)])
        with statements(store, hook):
            store.writer.run_once()
        future.result(timeout=0)
    assert len(runs_inserts) == 2
    assert store.list_runs() == ["2026-01-29", RUN]


@ALL
def test_a_writer_failing_mid_batch_acknowledges_nobody(make_store: Any) -> None:
    """A failure after the first statement rolls back the batch and fails every caller."""
    store = make_store(writer_thread=False)
    store.ensure_schema()
    futures = [store.submit_completions([completion(f"p{i}")]) for i in range(3)]

    def hook(sql: str, _params: Any) -> None:
        if "phasegate_completion_history" in sql:
            raise sa.exc.OperationalError(sql, None, ConnectionError("lost mid-batch"))

    with statements(store, hook):
        store.writer.run_once()
    for future in futures:
        with pytest.raises(TransientStoreError, match="lost mid-batch"):
            future.result(timeout=0)
    assert store.completions(RUN) == []
    retry = store.submit_completions([completion("p0")])
    store.writer.run_once()
    assert retry.result(timeout=0) == {PR: {"p0"}}


@backends("sqlite")
def test_a_transaction_the_database_ended_under_the_writer_acknowledges_nobody(
    make_store: Any,
) -> None:
    """SQLite may roll a whole transaction back by itself (a full disk, an I/O error);
    its driver's commit then commits nothing without a word. The writer checks before
    committing: every caller of the batch fails, none is told its rows are written."""
    store = make_store(writer_thread=False)
    store.ensure_schema()
    futures = [store.submit_completions([completion(f"p{i}")]) for i in range(2)]
    ended = store.writer.submit_work(
        lambda connection: connection.connection.dbapi_connection.execute("ROLLBACK")
    )
    store.writer.run_once()
    for future in (*futures, ended):
        with pytest.raises(TransientStoreError, match="rolled back the batch's transaction"):
            future.result(timeout=0)
    assert store.completions(RUN) == []
    retry = store.submit_completions([completion("p0")])
    store.writer.run_once()
    assert retry.result(timeout=0) == {PR: {"p0"}}


@ALL
def test_a_data_error_fails_only_its_own_caller(make_store: Any) -> None:
    """The batch is retried per caller: the bad one fails, the others are recorded."""
    store = make_store(writer_thread=False)
    store.ensure_schema()
    futures = [store.submit_completions([completion(name)]) for name in ("a", "poison", "b")]

    def hook(_sql: str, params: Any) -> None:
        if "poison" in repr(params):
            raise sa.exc.IntegrityError("insert", params, ValueError("poison row"))

    with statements(store, hook):
        store.writer.run_once()
    assert futures[0].result(timeout=0) == {PR: {"a"}}
    with pytest.raises(StoreError, match="poison row") as info:
        futures[1].result(timeout=0)
    assert not isinstance(info.value, TransientStoreError)
    assert futures[2].result(timeout=0) == {PR: {"a", "b"}}


@ALL
def test_a_large_batch_is_stored_as_its_reports_written_one_by_one(make_store: Any) -> None:
    """77 reports in one batch (several rows per statement on SQLite: 64 + 13),
    with the same processor reported again in the batch (a failure before a success, a
    failure after one, a later success): the stored rows and the answers are those of
    the reports written one at a time, in order."""
    reports = [completion(f"p{i:02d}", at=T0 + timedelta(seconds=i)) for i in range(70)]
    reports += [
        completion("p03", Status.FAILED, at=T0 + timedelta(seconds=100)),
        completion("p05", Status.FAILED, at=T0 - timedelta(seconds=100)),
        completion("p07", at=T0 + timedelta(seconds=200)),
        completion("x1", Status.FAILED, at=T0),
        completion("x1", at=T0 + timedelta(seconds=1)),
        completion("x2", at=T0 + timedelta(seconds=1)),
        completion("x2", Status.FAILED, at=T0 + timedelta(seconds=2)),
    ]
    batched = make_store("batched", writer_thread=False)
    batched.ensure_schema()
    inserts: list[str] = []

    def hook(sql: str, _params: Any) -> None:
        if sql.lstrip().upper().startswith("INSERT") and "phasegate_completions " in sql:
            inserts.append(sql)

    future = batched.submit_completions(reports)
    with statements(batched, hook):
        assert batched.writer.run_once() == 1
    answer = future.result(timeout=0)
    one_by_one = make_store("one-by-one")
    for report in reports:
        last = one_by_one.record_completions([report])
    assert answer == last
    assert batched.completions(RUN) == one_by_one.completions(RUN)
    assert batched.history(RUN) == one_by_one.history(RUN)
    if batched.dialect == "sqlite":
        assert len(inserts) == 2  # 64 + 13 rows
    else:
        assert len(inserts) == 1  # one executemany


def test_sqlite_statements_of_many_rows_keep_under_the_parameter_limit() -> None:
    """Cut to the connection's limit (999 parameters before SQLite 3.32): 300 rows of nine
    columns go as statements of at most 111 rows (a multiple of 16 above 16), every row
    exactly once, in order."""
    from phasegate.stores.sql.batch import insert_rows

    tables = build_tables(sa.MetaData())
    sent: list[tuple[str, Any]] = []

    class Recording:
        rowcount = 0

        def execute(self, sql: str, params: Any, *, many: bool = False) -> Any:
            sent.append((sql, params))
            return self

    sql = WriterSql(tables, sqlite.dialect(), max_params=999)
    rows = [tuple(f"{i}-{c}" for c in range(9)) for i in range(300)]
    insert_rows(Recording(), sql, sql.history, rows, tuple(sql.history.names or ()))  # type: ignore[arg-type]
    sizes = [len(params) // 9 for _, params in sent]
    assert sizes == [96, 96, 96, 12]
    assert max(len(params) for _, params in sent) <= 999
    flat = [value for _, params in sent for value in params]
    assert flat == [value for row in rows for value in row]
    assert all(
        statement.count("(?,") == size for (statement, _), size in zip(sent, sizes, strict=True)
    )
    roomy = WriterSql(tables, sqlite.dialect(), max_params=32766)
    sent.clear()
    insert_rows(Recording(), roomy, roomy.history, rows, tuple(roomy.history.names or ()))  # type: ignore[arg-type]
    assert [len(params) // 9 for _, params in sent] == [128, 128, 32, 12]


def test_the_parameter_limit_is_the_sqlite_librarys_own(make_store: Any) -> None:
    """Asked of the connection, so an older SQLite's 999 is honoured."""
    import sqlite3

    from phasegate.stores.sql.driver import parameter_limit

    store = make_store()
    with store.engines[0].connect() as connection:
        expected = sqlite3.connect(":memory:").getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        assert parameter_limit(connection) == expected


@backends("sqlite")
def test_a_lone_caller_is_not_held_back_for_company(make_store: Any) -> None:
    """The writer lingers for more callers only while they come in groups: with a linger
    of a minute, a lone write still commits at once."""
    store = make_store(linger=60.0)
    store.ensure_schema()
    started = time.monotonic()
    assert store.record_completions([completion("p0")]) == {PR: {"p0"}}
    assert store.record_completions([completion("p1")]) == {PR: {"p0", "p1"}}
    assert time.monotonic() - started < 30


@ALL
def test_close_commits_every_queued_write_and_refuses_later_ones(make_store: Any) -> None:
    """Closing with writes queued commits them all; a write after close is refused."""
    store = make_store(writer_thread=False)
    futures = [store.submit_completions([completion(f"p{i}")]) for i in range(4)]
    store.close()
    assert all(PR in f.result(timeout=0) for f in futures)
    with pytest.raises(StoreError, match="closed"):
        store.submit_completions([completion("late")]).result(timeout=0)
    assert len(make_store(url=store.url).completions(RUN)) == 4


@ALL
def test_close_while_the_store_is_down_refuses_queued_writes(make_store: Any) -> None:
    """Writes queued when the database is unreachable fail on close; none hangs."""
    store = make_store(writer_thread=False)
    store.ensure_schema()
    futures = [store.submit_completions([completion(f"p{i}")]) for i in range(3)]
    FaultSwitch().attach(store).fail()
    store.close()
    for future in futures:
        with pytest.raises(TransientStoreError):
            future.result(timeout=0)


@ALL
def test_the_writer_thread_batches_concurrent_callers(make_store: Any) -> None:
    """Through the real writer thread, 32 concurrent callers all land, in fewer batches."""
    store = make_store()
    store.ensure_schema()
    futures = [store.submit_completions([completion(f"p{i:02d}")]) for i in range(32)]
    for future in futures:
        future.result(timeout=60)
    assert len(store.completions(RUN)) == 32
    assert store.writer.requests == 32
    assert store.writer.batches < 32


# -- driver-level faults and processes ---------------------------------------------------


@ALL
def test_a_driver_level_fault_fails_writes_and_reads_transiently_then_heals(
    make_store: Any, clock: Any
) -> None:
    """FaultSwitch.attach fails the writer and Core calls alike; after it, both work again."""
    store = make_store()
    store.ensure_schema()
    switch = FaultSwitch(clock).attach(store)
    switch.fail(10)
    with pytest.raises(TransientStoreError):
        store.record_completions([completion()])
    with pytest.raises(TransientStoreError):
        store.claim_trigger(trigger())
    clock.advance(10)
    assert store.record_completions([completion()]) == {PR: {"bdl_boxscores"}}
    assert store.claim_trigger(trigger()) is True
    assert switch.failures >= 2


def _claim_in_process(url: str, barrier: Any, results: Any) -> None:
    store = SqlStore(url, pipeline=PIPELINE, name="child")
    store.ensure_schema()
    barrier.wait()
    results.put(store.claim_trigger(trigger()))
    store.close()


@ALL
@pytest.mark.slow
def test_concurrent_claims_from_processes_have_exactly_one_winner(make_store: Any) -> None:
    """12 processes claiming the same trigger at once: exactly one wins."""
    store = make_store()
    store.ensure_schema()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(12)
    results = context.Queue()
    processes = [
        context.Process(target=_claim_in_process, args=(store.url, barrier, results))
        for _ in range(12)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=90) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    results.close()
    results.join_thread()
    assert sorted(outcomes) == [False] * 11 + [True]
    assert len(store.pending_triggers(T0 + timedelta(days=1))) == 1


def test_the_writer_binds_times_exactly_as_core_does() -> None:
    """The writer's fast SQLite time form equals SQLAlchemy's, from any timezone."""
    dialect = sqlite.dialect()
    core = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert core is not None
    moment = datetime(2026, 1, 28, 7, 30, 1, 5, tzinfo=timezone(timedelta(hours=2)))
    assert time_binder(dialect)(moment) == core(moment) == "2026-01-28 05:30:01.000005"
    with pytest.raises(ValueError, match="naive"):
        time_binder(dialect)(moment.replace(tzinfo=None))


@ALL
def test_the_claim_path_driver_sql_reads_and_writes_as_core_does(make_store: Any) -> None:
    """Claims, executions and reads by run key go through driver SQL compiled once; each
    value (times given in another timezone, metadata, a delivered entry) reads back as
    Core's own read of the same rows gives it."""
    store = make_store()
    store.ensure_schema()
    away = timezone(timedelta(hours=-5))
    at = T0.astimezone(away) + timedelta(microseconds=7)
    store.record_completions(
        [
            completion("a", at=at, metadata={"rows": 3, "note": "é"}),
            completion("b", Status.FAILED, at=at + timedelta(seconds=1), metadata={}),
            completion("c", run_key="2026-01-29", at=at),
        ]
    )
    assert store.claim_triggers([trigger(at=at), trigger(run_key="2026-01-29")]) == [True, True]
    assert store.claim_triggers([trigger(at=at)]) == [False]
    store.mark_delivered_many([trigger().trigger_id], at + timedelta(seconds=2))
    fast = store.completions_of_runs([RUN, "2026-01-29", "2026-01-30"])
    assert fast == {key: store.completions(key) for key in (RUN, "2026-01-29", "2026-01-30")}
    assert fast[RUN][0].occurred_at == at
    assert fast[RUN][0].occurred_at.tzinfo is not None
    assert dict(fast[RUN][0].metadata) == {"rows": 3, "note": "é"}
    entries = store.triggers_of_runs([RUN, "2026-01-29"])
    assert entries == {key: store.triggers(key) for key in (RUN, "2026-01-29")}
    [delivered] = entries[RUN]
    assert (delivered.claimed_at, delivered.delivered_at) == (at, at + timedelta(seconds=2))
    assert sorted(store.list_runs()) == [RUN, "2026-01-29"]


def _execution_of(claimed: Trigger) -> PhaseExecution:
    return PhaseExecution(
        phase=claimed.phase,
        run_key=claimed.run_key,
        started_at=T0,
        triggered_at=T0 + timedelta(minutes=5),
        processors=claimed.processors,
        reason=claimed.reason,
        trigger_id=claimed.trigger_id,
        attempt=claimed.attempt,
    )


@ALL
def test_claims_keep_the_execution_records_of_what_they_won_in_one_transaction(
    make_store: Any,
) -> None:
    """``claim_triggers(triggers, executions)``: each won claim's execution is kept in the
    claim's own transaction; a lost claim keeps none (its winner did); a claim that fails
    keeps neither."""
    store = make_store()
    store.ensure_schema()
    first, second = trigger(), trigger(run_key="2026-01-29")
    assert store.claim_triggers([first], [_execution_of(first)]) == [True]
    lost = dataclasses.replace(_execution_of(first), triggered_at=T0 + timedelta(hours=1))
    both = [_execution_of(second), lost]
    assert store.claim_triggers([second, first], both) == [True, False]
    kept = sorted(store.phase_executions(), key=lambda e: e.run_key)
    assert [(e.run_key, e.triggered_at) for e in kept] == [
        (RUN, T0 + timedelta(minutes=5)),
        ("2026-01-29", T0 + timedelta(minutes=5)),
    ]
    third = trigger(run_key="2026-01-30")
    with statements(store, _fail_on("phasegate_phase_executions")), pytest.raises(StoreError):
        store.claim_triggers([third], [_execution_of(third)])
    assert store.triggers("2026-01-30") == []
    assert store.claim_triggers([third]) == [True]
    assert len(store.phase_executions()) == 2


@ALL
def test_a_trigger_asked_twice_keeps_the_execution_of_its_first_asking(make_store: Any) -> None:
    """The same trigger twice in one ``claim_triggers(triggers, executions)``: the first
    asking wins and keeps its execution record; the second, lost, keeps none."""
    store = make_store()
    store.ensure_schema()
    wanted = trigger()
    again = dataclasses.replace(_execution_of(wanted), triggered_at=T0 + timedelta(hours=1))
    assert store.claim_triggers([wanted, wanted], [_execution_of(wanted), again]) == [True, False]
    assert [e.triggered_at for e in store.phase_executions()] == [T0 + timedelta(minutes=5)]


def _fail_on(table: str) -> Callable[[str, Any], None]:
    def hook(sql: str, _params: Any) -> None:
        if sql.lstrip().upper().startswith("INSERT") and table in sql:
            raise sa.exc.OperationalError(sql, None, ConnectionError("lost mid-claim"))

    return hook


@ALL
def test_the_driver_cursor_reports_errors_and_statements_as_core_does(make_store: Any) -> None:
    """Statements the writer sends past Core still reach the engine's listeners; a driver
    error is raised as SQLAlchemy's class for it, so it is classified as before."""
    store = make_store()
    store.ensure_schema()
    seen: list[str] = []
    with statements(store, lambda sql, _: seen.append(sql)), store.engines[0].connect() as conn:
        cursor = DriverCursor(conn)
        cursor.begin()
        assert [tuple(row) for row in cursor.execute("SELECT 1", ()).fetchall()] == [(1,)]
        insert = (
            "INSERT INTO phasegate_runs (pipeline, run_key, first_seen_at) "
            "VALUES ('p', 'dup', '2026-01-28 00:00:00')"
        )
        cursor.execute(insert, ())
        with pytest.raises(StoreError) as refused, map_driver_errors("primary"):
            cursor.execute(insert, ())
        cursor.close()
    assert isinstance(refused.value.__cause__, sa.exc.IntegrityError)
    assert not isinstance(refused.value, TransientStoreError)
    assert "SELECT 1" in seen


@backends("sqlite")
def test_a_connection_the_driver_lost_is_invalidated_not_reused(make_store: Any) -> None:
    """A disconnect seen by the driver cursor invalidates the connection (as Core does), so
    the pool never hands it out again, and the error is transient."""
    store = make_store()
    store.ensure_schema()
    with store.engines[1].connect() as conn:
        cursor = DriverCursor(conn)
        conn.connection.dbapi_connection.close()  # type: ignore[union-attr]
        with pytest.raises(TransientStoreError, match="closed database"), map_driver_errors("p"):
            cursor.execute("SELECT 1", ())
        assert conn.invalidated
    assert store.completions_of_runs([RUN]) == {RUN: []}


@backends("sqlite")
def test_the_writer_reopens_a_connection_left_idle_too_long(make_store: Any, clock: Any) -> None:
    """A writer connection idle past ``idle_reconnect`` is replaced before the next batch."""
    store = make_store()
    store.ensure_schema()
    opened: list[Any] = []

    def connect() -> Any:
        opened.append(store.engines[0].connect())
        return opened[-1]

    writer = CompletionWriter(
        connect=connect,
        compile_sql=lambda connection: WriterSql(build_tables(sa.MetaData()), connection.dialect),
        pipeline=PIPELINE,
        name="w",
        idle_reconnect=300,
        monotonic=clock.monotonic,
    )
    bind = time_binder(store.engines[0].dialect)
    for seconds, processor in ((0, "a"), (10, "b"), (301, "c")):
        clock.advance(seconds)
        item = completion(processor)
        future = writer.submit([driver_completion_row(PIPELINE, item, bind)], frozenset({PR}))
        writer.run_once()
        assert processor in future.result(timeout=0)[PR]
    writer.close()
    assert len(opened) == 2
    assert opened[0].closed


def test_a_deadlock_victim_is_run_again_and_other_errors_are_not() -> None:
    """MariaDB 1213 and PostgreSQL 40P01 are retried; an integrity error is raised at once."""
    calls: list[int] = []
    victims = [
        sa.exc.OperationalError("x", None, pymysql.err.OperationalError(1213, "Deadlock")),
        sa.exc.OperationalError("x", None, type("Pg", (Exception,), {"sqlstate": "40P01"})()),
    ]

    def transaction() -> str:
        calls.append(1)
        if victims:
            raise victims.pop(0)
        return "done"

    assert retry_deadlocks(transaction) == "done"
    assert len(calls) == 3
    duplicate = sa.exc.IntegrityError("x", None, pymysql.err.IntegrityError(1062, "dup"))
    assert not is_deadlock(duplicate)
    with pytest.raises(sa.exc.IntegrityError):
        retry_deadlocks(lambda: (_ for _ in ()).throw(duplicate))


def test_switching_a_sqlite_file_to_wal_tries_again_while_it_is_locked() -> None:
    """Switching to WAL takes a lock the busy timeout does not wait for (the contract's
    concurrent-claims test met "database is locked" there when several handles opened
    one new file at once): a locked attempt is tried again, anything else is raised."""
    import sqlite3

    from phasegate.stores.sql.schema import _use_wal

    class Raw:
        def __init__(self, mode: str, failures: list[str]) -> None:
            self.mode, self.failures, self.statements = mode, failures, []

        def execute(self, sql: str) -> Any:
            self.statements.append(sql)
            if self.failures:
                raise sqlite3.OperationalError(self.failures.pop(0))
            if sql.endswith("=WAL"):
                self.mode = "wal"
            cursor = type("Cursor", (), {"fetchone": lambda _self: (self.mode,)})
            return cursor()

    locked = Raw("delete", ["database is locked", "database is locked"])
    _use_wal(locked, pause=0)
    assert locked.mode == "wal"
    assert locked.statements[-1] == "PRAGMA journal_mode=WAL"
    already = Raw("wal", [])
    _use_wal(already, pause=0)
    assert already.statements == ["PRAGMA journal_mode"]  # left alone
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        _use_wal(Raw("delete", ["disk I/O error"]), pause=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _use_wal(Raw("delete", ["database is locked"] * 5), attempts=3, pause=0)
