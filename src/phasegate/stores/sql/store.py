"""``SqlStore``: every store capability on SQLAlchemy Core (SQLite, PostgreSQL, MariaDB).

Completions go through the store's :class:`~phasegate.stores.sql.writer.CompletionWriter`
(batched, one commit per batch); every other write is one short transaction on the
write engine, correct across threads and across processes sharing the database: claims
and timeouts are an INSERT that ignores a conflict (compare-and-set by row count), and a
lease is a conditional UPDATE on rows first picked with ``FOR UPDATE SKIP LOCKED`` where
the database has it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseExecution,
    PhaseRun,
    RecordSet,
    TimeoutReport,
    Trigger,
)
from phasegate.stores.base import ALL_CAPABILITIES, Capability, ClaimsAfter
from phasegate.stores.sql import rows as r
from phasegate.stores.sql.driver import parameter_limit
from phasegate.stores.sql.engines import (
    create_engines,
    map_driver_errors,
    redact_url,
    retry_deadlocks,
)
from phasegate.stores.sql.outbox import (
    claim_all,
    followed_by,
    lease,
    oldest_first,
    pending,
    rows_of_runs,
    update_undelivered,
)
from phasegate.stores.sql.replication import export_records, export_runs, import_records
from phasegate.stores.sql.schema import build_tables, create_schema, read_version
from phasegate.stores.sql.statements import Statements, WriterSql
from phasegate.stores.sql.writer import Answer, CompletionWriter

P = ParamSpec("P")
T = TypeVar("T")


def _mapped(method: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store: SqlStore = args[0]  # type: ignore[assignment]
        with map_driver_errors(store.name):
            store.ensure_schema()
            return method(*args, **kwargs)

    return wrapper


class SqlStore:
    """A store with every capability on SQLAlchemy Core.

    ``sqlite:///path[?synchronous=FULL|NORMAL]`` runs in WAL mode with durable commits
    by default; ``postgresql://...[?schema=NAME]`` uses psycopg 3; ``mysql://...`` uses
    PyMySQL. The schema is created on first use and versioned in ``phasegate_meta``.
    ``max_batch`` and ``linger`` shape the writer's batches; with ``writer_thread=False``
    batches wait for ``store.writer.run_once()`` (tests drive the writer step by step).
    """

    def __init__(
        self,
        url: str,
        *,
        pipeline: str,
        name: str = "store",
        max_batch: int = 512,
        linger: float = 0.001,
        connect_timeout: float = 5.0,
        writer_thread: bool = True,
    ) -> None:
        self.name = name
        self.pipeline = pipeline
        self.url = url
        self._engines = create_engines(url, name=name, connect_timeout=connect_timeout)
        self.dialect = self._engines.dialect
        self._metadata = sa.MetaData()
        self._t = build_tables(self._metadata)
        self._s = Statements(self._t, self._engines.write.dialect, pipeline)
        self._bind_time = r.time_binder(self._engines.write.dialect)
        self._read_time = r.time_reader(self._engines.read.dialect)
        self._schema_ready = threading.Event()
        self._schema_lock = threading.Lock()
        self._writer_thread = writer_thread
        self.writer = CompletionWriter(
            connect=self._writer_connection,
            compile_sql=lambda connection: WriterSql(
                self._t, connection.dialect, max_params=parameter_limit(connection)
            ),
            pipeline=pipeline,
            name=name,
            max_items=max_batch,
            linger=linger,
        )

    @property
    def capabilities(self) -> frozenset[Capability]:
        """Every capability."""
        return ALL_CAPABILITIES

    @property
    def engines(self) -> tuple[Engine, ...]:
        """The engines behind this store (two for SQLite: writer and reader)."""
        return self._engines.all

    # -- schema --------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create (or check) the schema once per store object."""
        if self._schema_ready.is_set():
            return
        with self._schema_lock:
            if not self._schema_ready.is_set():
                with map_driver_errors(self.name):
                    create_schema(self._engines, self._metadata, self._t, self.name)
                self._schema_ready.set()

    def schema_version(self) -> int | None:
        """The schema version recorded in the store."""
        self.ensure_schema()
        with map_driver_errors(self.name), self._engines.read.connect() as connection:
            return read_version(connection, self._t["meta"])

    def _writer_connection(self) -> Connection:
        self.ensure_schema()
        return self._engines.write.connect()

    @property
    def claims_ride_writer(self) -> bool:
        """Whether claims and phase executions share the writer's commits (SQLite: one write
        lock, a sync per commit); else short transactions of their own (no deadlocks)."""
        return self._writer_thread and self.dialect == "sqlite"

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a write transaction: the writer's next one on SQLite (none waits
        for the write lock behind a batch), else a short one of its own."""
        if self.claims_ride_writer:
            if not self.writer.started:
                self.writer.start()
            return self.writer.submit_work(work).result()
        with self._engines.write.begin() as connection:
            return work(connection)

    # -- completions ---------------------------------------------------------------------

    def submit_completions(
        self, completions: Sequence[Completion], then: ClaimsAfter | None = None
    ) -> Future[Answer]:
        """Queue a batch for the writer; the future resolves once it is committed. Only
        where :attr:`claims_ride_writer`: ``then`` (see ``outbox.followed_by``)."""
        try:
            rows = [r.driver_completion_row(self.pipeline, c, self._bind_time) for c in completions]
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
            failed: Future[Answer] = Future()
            failed.set_exception(exc)
            return failed
        if not rows:
            done: Future[Answer] = Future()
            done.set_result({})
            return done
        if self._writer_thread and not self.writer.started:
            self.writer.start()
        follow = followed_by(then, self._s, self._read_time) if then is not None else None
        return self.writer.submit(rows, frozenset(c.phase_run for c in completions), follow)

    def record_completions(
        self, completions: Sequence[Completion]
    ) -> Mapping[PhaseRun, frozenset[str]]:
        """Record a batch durably; answer each phase-run it touched, read after the write."""
        return self.submit_completions(completions).result()

    def record_completion(self, completion: Completion) -> frozenset[str]:
        """Compatibility: record one completion; the successes of its phase-run."""
        return self.record_completions([completion])[completion.phase_run]

    @_mapped
    def completions(self, run_key: str, phase: str | None = None) -> list[Completion]:
        """The current completion of each processor for ``run_key`` (one phase, or all)."""
        params = {"pipeline": self.pipeline, "run_key": run_key, "phase": phase}
        query = self._s.completions_of_run if phase is None else self._s.completions_of_phase
        with self._read() as connection:
            found = [r.to_completion(row) for row in connection.execute(query, params)]
        return sorted(found, key=lambda c: c.key)

    @_mapped
    def completions_of_runs(self, run_keys: Sequence[str]) -> dict[str, list[Completion]]:
        """:meth:`completions` of several run keys, in one query per 500 keys."""
        with self._read() as connection:
            found = rows_of_runs(connection, self._s, "completions", run_keys, self._read_time)
        return {key: sorted(group, key=lambda c: c.key) for key, group in found.items()}

    @_mapped
    def history(self, run_key: str) -> list[Completion]:
        """Every distinct report received for ``run_key``, oldest first."""
        with self._read() as connection:
            found = [
                r.to_completion(row)
                for row in connection.execute(self._s.of_run("history", run_key))
            ]
        return sorted(found, key=lambda c: (c.occurred_at, c.key))

    @_mapped
    def list_runs(self, limit: int = 50) -> list[str]:
        """The most recent run keys, newest (greatest) first."""
        table = self._t["runs"]
        query = (
            sa.select(table.c.run_key)
            .where(table.c.pipeline == self.pipeline)
            .order_by(table.c.run_key.desc())
            .limit(limit)
        )
        with self._read() as connection:
            return list(connection.execute(query).scalars())

    # -- claims --------------------------------------------------------------------------

    @_mapped
    def claim_trigger(self, trigger: Trigger) -> bool:
        """Claim ``trigger`` by id and put it in the outbox atomically; ``True`` for the winner."""
        return self.claim_triggers([trigger])[0]

    keeps_executions_with_claims = True  # see stores.base.keeps_executions_with_claims

    @_mapped
    def claim_triggers(
        self, triggers: Sequence[Trigger], executions: Sequence[PhaseExecution] | None = None
    ) -> list[bool]:
        """Claim several triggers in one transaction (each by its id; with ``executions``,
        one per trigger, each winner's execution record too); one answer each. On SQLite
        they ride the writer's next commit; on a server database they are one short
        transaction, in trigger id order so concurrent replicas cannot deadlock."""
        work = functools.partial(claim_all, s=self._s, triggers=triggers, executions=executions)
        return retry_deadlocks(lambda: self._transaction(work)) if triggers else []

    @_mapped
    def record_timeout(self, report: TimeoutReport) -> bool:
        """Record that a phase-run timed out; ``True`` only for the first caller."""
        row, insert = r.timeout_row(self.pipeline, report), self._s.ignore["timeouts"]

        def first(connection: Connection) -> bool:
            return bool(connection.execute(insert, row).rowcount == 1)

        return retry_deadlocks(lambda: self._transaction(first))

    # -- the outbox ----------------------------------------------------------------------

    @_mapped
    def triggers(self, run_key: str) -> list[OutboxEntry]:
        """Every claimed trigger of ``run_key``, oldest first."""
        with self._read() as connection:
            found = [
                r.to_entry(row) for row in connection.execute(self._s.of_run("triggers", run_key))
            ]
        return sorted(found, key=oldest_first)

    @_mapped
    def triggers_of_runs(self, run_keys: Sequence[str]) -> dict[str, list[OutboxEntry]]:
        """:meth:`triggers` of several run keys, in one query per 500 keys."""
        with self._read() as connection:
            found = rows_of_runs(connection, self._s, "triggers", run_keys, self._read_time)
        return {key: sorted(group, key=oldest_first) for key, group in found.items()}

    @_mapped
    def pending_triggers(self, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Undelivered triggers due at ``now`` with no live lease, oldest first."""
        with self._read() as connection:
            return pending(connection, self._s, now, limit, self._read_time)

    @_mapped
    def lease_triggers(
        self, owner: str, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[OutboxEntry]:
        """Lease up to ``limit`` due triggers to ``owner`` until ``lease_until``."""
        skip_locked = self.dialect != "sqlite"
        return retry_deadlocks(
            lambda: self._transaction(
                lambda c: lease(
                    c,
                    self._s,
                    owner,
                    now,
                    lease_until,
                    limit,
                    skip_locked=skip_locked,
                    read_time=self._read_time,
                )
            )
        )

    @_mapped
    def mark_delivered_many(self, trigger_ids: Sequence[str], delivered_at: datetime) -> None:
        """:meth:`mark_delivered` for several triggers, in one statement."""
        if trigger_ids:
            self._transaction(
                lambda c: update_undelivered(c, self._s, "delivered", trigger_ids, at=delivered_at)
            )

    @_mapped
    def mark_delivered(self, trigger_id: str, delivered_at: datetime) -> None:
        """Record that a transport accepted ``trigger_id`` (idempotent); drops the lease."""
        self.mark_delivered_many([trigger_id], delivered_at)

    @_mapped
    def record_delivery_failure(
        self, trigger_id: str, error: str, next_attempt_at: datetime
    ) -> None:
        """Count a failed delivery attempt and when to try again; drops the lease."""
        self._transaction(
            lambda c: update_undelivered(
                c, self._s, "failed", [trigger_id], error=error[:1024], retry_at=next_attempt_at
            )
        )

    # -- phase log -----------------------------------------------------------------------

    @_mapped
    def record_phase_execution(self, execution: PhaseExecution) -> None:
        """Keep how a phase-run went (idempotent per phase, run key and attempt)."""
        self.record_phase_executions([execution])

    @_mapped
    def record_phase_executions(self, executions: Sequence[PhaseExecution]) -> None:
        """Keep several phase executions in one transaction (idempotent, as one by one)."""
        rows = [r.execution_row(self.pipeline, e) for e in executions]
        if rows:
            insert = self._s.driver.ignore["executions"]
            self._transaction(lambda connection: insert.execute_many(connection, rows))

    @_mapped
    def phase_executions(
        self, phase: str | None = None, limit: int = 100, run_key: str | None = None
    ) -> list[PhaseExecution]:
        """Recent phase executions (of one phase, of one run), newest first."""
        table = self._t["executions"]
        query = sa.select(table).where(table.c.pipeline == self.pipeline)
        if phase is not None:
            query = query.where(table.c.phase == phase)
        if run_key is not None:
            query = query.where(table.c.run_key == run_key)
        query = query.order_by(table.c.triggered_at.desc()).limit(limit)
        with self._read() as connection:
            return [r.to_execution(row) for row in connection.execute(query)]

    @_mapped
    def timeouts(self, run_key: str) -> list[TimeoutReport]:
        """The timeout reports of ``run_key``."""
        with self._read() as connection:
            found = [
                r.to_timeout(row) for row in connection.execute(self._s.of_run("timeouts", run_key))
            ]
        return sorted(found, key=lambda t: (t.phase, t.attempt))

    # -- replication ---------------------------------------------------------------------

    @_mapped
    def export_records(self, first_run_key: str, last_run_key: str) -> RecordSet:
        """Everything stored for run keys in ``[first_run_key, last_run_key]``."""
        with self._read() as connection:
            return export_records(connection, self._s, first_run_key, last_run_key)

    @_mapped
    def export_runs(self, run_keys: Sequence[str]) -> RecordSet:
        """Everything stored for ``run_keys`` (one query per table per 500 run keys)."""
        with self._read() as connection:
            return export_runs(connection, self._s, run_keys)

    @_mapped
    def import_records(self, records: RecordSet) -> None:
        """Merge ``records`` in: success wins, delivered stays delivered, claims kept (on
        SQLite in the writer's transaction, not behind every batch for the write lock)."""
        self._transaction(lambda connection: import_records(connection, self._s, records))

    # -- health and lifecycle ------------------------------------------------------------

    def _read(self) -> Connection:
        return self._engines.read.connect()

    def ping(self) -> None:
        """A cheap round trip that raises when the store cannot be used."""
        with map_driver_errors(self.name), self._read() as connection:
            connection.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        """Write (or refuse) every queued batch, then release every connection."""
        self.writer.close()
        for engine in self.engines:
            engine.dispose()

    def drop_all(self) -> None:
        """Drop every phasegate table (tests and ``reset`` tooling only)."""
        with map_driver_errors(self.name), self._engines.write.begin() as connection:
            self._metadata.drop_all(connection)
        self._schema_ready.clear()
        self.writer.forget_runs()

    def __repr__(self) -> str:
        return f"SqlStore(name={self.name!r}, url={redact_url(self.url)!r})"
