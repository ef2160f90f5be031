"""The writer of one SQL store: a thread with one long-lived connection that writes
queued completion batches together.

Callers hand it values (driver-ready rows), not closures. It takes what is queued (up to
``max_items`` completions, waiting at most ``linger`` seconds for more while callers come in
groups; a lone caller is written at once), writes it with
``executemany`` using SQL compiled once, skips the runs insert for run keys it already
wrote, answers every phase-run of the batch with one query by run key, commits once and
resolves exactly the futures of that batch. A failed commit fails every caller of the
batch; a data error in one caller's rows is retried per caller so it fails only that
caller. ``close()`` commits (or refuses with the error) everything queued before it.

On SQLite every other write of the store (a claim, a lease, a delivery mark, a phase
execution, an import of copied records) rides along: :meth:`submit_work` queues a function
of the connection that runs in the next batch's transaction, answered with what it
returned once that transaction commits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from phasegate.errors import StoreError
from phasegate.model import Answered, PhaseRun
from phasegate.stores.sql.batch import Found, Row, insert_rows, read_answers
from phasegate.stores.sql.driver import DriverCursor, TransactionLost
from phasegate.stores.sql.engines import is_data_error, map_driver_errors
from phasegate.stores.sql.statements import COMPLETION_COLUMNS, RUNS_COLUMNS, WriterSql

log = logging.getLogger(__name__)

Answer = Mapping[PhaseRun, frozenset[str]]
_RUN_KEY = COMPLETION_COLUMNS.index("run_key")
_OCCURRED_AT = COMPLETION_COLUMNS.index("occurred_at")
_NOTHING = Answered()
# A row's identity: its leading columns, pipeline to attempt.
_KEY_END = COMPLETION_COLUMNS.index("attempt") + 1


def _row_key(row: Row) -> tuple[Any, ...]:
    return row[:_KEY_END]


T = TypeVar("T")


Then = Callable[[Connection, dict[PhaseRun, Answered], dict[Any, Any]], Any]
"""Work that follows a request's rows in their transaction, given the store's answers
for its phase-runs and a mapping shared by the transaction's ``then`` calls (the claims
of what they completed; see :meth:`CompletionWriter.submit`)."""


class Answers(dict[PhaseRun, Answered]):
    """A request's answers, and what its ``then`` work returned (or raised) beside them."""

    __slots__ = ("followed",)

    def __init__(self, answers: dict[PhaseRun, Answered], followed: Any = None) -> None:
        super().__init__(answers)
        self.followed = followed


@dataclass(slots=True)
class _Request:
    rows: list[Row]
    runs: frozenset[PhaseRun]
    future: Future[Any]
    work: Callable[[Connection], Any] | None = None
    then: Then | None = None

    @property
    def size(self) -> int:
        return len(self.rows) or 1


def _copy(error: StoreError) -> StoreError:
    """A fresh instance per caller, so concurrent raisers never share a traceback."""
    copy = type(error)(str(error))
    copy.__cause__ = error.__cause__
    return copy


def _failure(name: str, error: BaseException) -> StoreError:
    """A failed batch's error as each caller hears it: its own copy of a store error,
    any other error as a store error naming it."""
    if isinstance(error, StoreError):
        return _copy(error)
    return StoreError(f"{name}: writer failed: {error!r}")


def _uncancellable() -> Future[Any]:
    """A writer's answer: running from the start, so that no caller can cancel it. What
    is queued is written and answered (a cancelled future could not be answered, and
    answering it would stop the writer)."""
    future: Future[Any] = Future()
    future.set_running_or_notify_cancel()
    return future


class CompletionWriter:
    """Writes queued completion batches on one thread and one connection.

    ``connect()`` opens the connection (the schema ready); ``compile(connection)``
    builds the writer's SQL for the connected dialect. ``start()`` runs the loop on a
    thread; tests may instead call :meth:`run_once` to write what is queued.
    """

    def __init__(
        self,
        *,
        connect: Callable[[], Connection],
        compile_sql: Callable[[Connection], WriterSql],
        pipeline: str,
        name: str,
        max_items: int = 512,
        linger: float = 0.001,
        known_runs: int = 65_536,
        idle_reconnect: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.pipeline = pipeline
        self.max_items = max_items
        self.linger = linger
        self._connect = connect
        self._compile = compile_sql
        self._monotonic = monotonic
        self._known_limit = known_runs
        self._known: set[str] = set()
        self._queue: deque[_Request] = deque()
        self._queued_items = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._connection: Connection | None = None
        self._sql: WriterSql | None = None
        # A connection idle this long may have been closed by the server: open a new one.
        self._idle_reconnect = idle_reconnect
        self._last_used = 0.0
        self._last_batch = 0  # callers in the batch taken last
        self._opened_for_batch = False  # whether the batch being written got its connection
        self.batches = 0
        self.requests = 0
        self.items = 0

    # -- callers -------------------------------------------------------------------------

    def submit(
        self, rows: list[Row], runs: frozenset[PhaseRun], then: Then | None = None
    ) -> Future[Answer]:
        """Queue ``rows``; the future answers ``runs`` once the batch holding them commits.

        ``then(connection, answers, shared)`` runs in the same transaction right after
        the batch's rows are written and answered (``shared`` is one mapping for every
        ``then`` of the transaction): what it returns, or the error it raised (it must
        undo its own writes first), is the answer's ``followed``."""
        future: Future[Answer] = _uncancellable()
        with self._cond:
            if self._closed:
                future.set_exception(StoreError(f"{self.name}: the store is closed"))
                return future
            self._enqueue(_Request(rows, runs, future, then=then))
        return future

    def submit_work(self, work: Callable[[Connection], T]) -> Future[T]:
        """Queue ``work(connection)`` for the next batch's transaction (a claim, a lease, an
        import...); the future answers what it returned once that transaction commits."""
        future: Future[T] = _uncancellable()
        with self._cond:
            if self._closed:
                future.set_exception(StoreError(f"{self.name}: the store is closed"))
                return future
            self._enqueue(_Request([], frozenset(), future, work=work))
        return future

    def _enqueue(self, request: _Request) -> None:
        self._queue.append(request)
        self._queued_items += request.size
        # Wake the writer when it is idle or its batch is full, not on every item.
        if len(self._queue) == 1 or self._queued_items >= self.max_items:
            self._cond.notify()

    def start(self) -> None:
        """Run the write loop on a daemon thread (idempotent)."""
        with self._cond:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._loop, name=f"phasegate-writer-{self.name}", daemon=True
            )
            self._thread.start()

    @property
    def started(self) -> bool:
        """Whether the write loop runs on its thread."""
        return self._thread is not None

    def forget_runs(self) -> None:
        """Forget which run keys were written (after the tables were dropped)."""
        with self._cond:
            self._known.clear()

    def close(self) -> None:
        """Refuse new batches, write every queued one (or fail it), release the connection."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        else:
            while self.run_once():
                pass
        self._drop_connection(broken=False)

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            batch = self._take(block=True)
            if batch is None:
                return
            try:
                self._write(batch)
            except Exception:  # the loop must outlive any bug: every later write needs it
                log.exception("%s: answering a batch failed", self.name)

    def run_once(self) -> int:
        """Write what is queued now as one batch; how many callers it answered."""
        batch = self._take(block=False)
        if batch is None:
            return 0
        self._write(batch)
        return len(batch)

    def _take(self, *, block: bool) -> list[_Request] | None:
        with self._cond:
            while block and not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            if block and self.linger > 0 and self._last_batch > 1:
                # Linger only while callers come in groups: a lone caller's write (a claim
                # on a quiet store) is not held back waiting for company that never comes.
                deadline = self._monotonic() + self.linger
                while self._queued_items < self.max_items and not self._closed:
                    remaining = deadline - self._monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            batch: list[_Request] = []
            items = 0
            while self._queue and (not batch or items + self._queue[0].size <= self.max_items):
                request = self._queue.popleft()
                items += request.size
                batch.append(request)
            self._queued_items -= items
            self._last_batch = len(batch)
            return batch

    def _write(self, batch: list[_Request]) -> None:
        try:
            answers, counts = self._commit(batch)
        except Exception as error:
            blamed = not isinstance(error, StoreError) or is_data_error(error)
            if len(batch) > 1 and self._opened_for_batch and blamed:
                # One caller's bad rows or failing work (a data error, a bug) fail that
                # caller only: the batch was rolled back, each request is written alone.
                # (Failing to open the connection is no caller's fault: all hear it.)
                for request in batch:
                    self._write([request])
                return
            if not isinstance(error, StoreError):
                log.exception("%s: writer failed", self.name)
            for request in batch:
                self._answer(request, error=_failure(self.name, error))
            return
        except BaseException as error:  # a bug must not hang the callers
            log.exception("%s: writer failed", self.name)
            for request in batch:
                self._answer(request, error=_failure(self.name, error))
            return
        for index, request in enumerate(batch):
            if request.work is not None:
                self._answer(request, counts.get(index))
                continue
            mine = {
                run: answers.get((run.phase, run.run_key, run.attempt), _NOTHING)
                for run in request.runs
            }
            self._answer(
                request, mine if request.then is None else Answers(mine, counts.get(index))
            )

    def _answer(
        self, request: _Request, value: Any = None, *, error: BaseException | None = None
    ) -> None:
        """Settle one caller's future; one already settled (by a misbehaving caller) is
        logged and skipped, so that the batch's other callers are answered."""
        try:
            if error is None:
                request.future.set_result(value)
            else:
                request.future.set_exception(error)
        except InvalidStateError:
            log.error("%s: a caller's answer was settled before the writer's", self.name)

    # -- one transaction -----------------------------------------------------------------

    def _commit(self, batch: list[_Request]) -> tuple[Found, dict[int, Any]]:
        # In key order: batches of replicas sharing a server database lock the same rows
        # in the same order, so they wait for each other instead of deadlocking.
        rows = sorted((row for request in batch for row in request.rows), key=_row_key)
        run_keys = sorted({run.run_key for request in batch for run in request.runs})
        known = self._known
        fresh = {row[_RUN_KEY]: row[_OCCURRED_AT] for row in rows if row[_RUN_KEY] not in known}
        self._opened_for_batch = False
        with map_driver_errors(self.name):
            try:
                connection, sql = self._opened()
                self._opened_for_batch = True
                cursor = DriverCursor(connection)
                try:
                    cursor.begin()
                    answers = self._rows(cursor, sql, rows, fresh, run_keys)
                    counts = self._work(connection, batch)
                    counts.update(self._then(cursor, connection, batch, answers))
                    if cursor.transaction_lost():
                        raise TransactionLost(
                            f"{self.name}: the database rolled back the batch's transaction"
                        )
                    if connection.in_transaction():
                        # Work that went through Core joined this transaction (see the
                        # engine's begin event); Core commits it, ending its own view too.
                        connection.commit()
                    else:
                        cursor.commit()
                finally:
                    cursor.close()
            except BaseException:
                self._drop_connection(broken=True)
                raise
        self.batches += 1
        self.requests += len(batch)
        self.items += len(rows)
        self._remember(fresh)
        return answers, counts

    def _rows(
        self,
        cursor: DriverCursor,
        sql: WriterSql,
        rows: list[Row],
        fresh: dict[str, Any],
        run_keys: list[str],
    ) -> Found:
        """Write the batch's completions and answer its run keys' phase-runs."""
        if not rows:
            return {}
        insert_rows(cursor, sql, sql.upsert, rows, COMPLETION_COLUMNS)
        insert_rows(cursor, sql, sql.history, rows, COMPLETION_COLUMNS)
        if fresh:
            runs = [(self.pipeline, key, fresh[key]) for key in sorted(fresh)]
            insert_rows(cursor, sql, sql.runs, runs, RUNS_COLUMNS)
        return read_answers(cursor, sql, self.pipeline, run_keys)

    @staticmethod
    def _work(connection: Connection, batch: list[_Request]) -> dict[int, Any]:
        return {
            index: request.work(connection)
            for index, request in enumerate(batch)
            if request.work is not None
        }

    def _then(
        self, cursor: DriverCursor, connection: Connection, batch: list[_Request], answers: Found
    ) -> dict[int, Any]:
        """Each request's ``then`` work; its error is its answer (``then`` undoes its own
        writes, see ``SqlStore.submit_completions``; a driver error arrives as the store's
        error) and the batch goes on, unless the transaction itself was lost with it."""
        followed: dict[int, Any] = {}
        shared: dict[Any, Any] = {}
        for index, request in enumerate(batch):
            if request.then is None:
                continue
            mine = {
                run: answers.get((run.phase, run.run_key, run.attempt), _NOTHING)
                for run in request.runs
            }
            try:
                with map_driver_errors(self.name):
                    followed[index] = request.then(connection, mine, shared)
            except Exception as exc:  # the caller's to handle, not the batch's
                if isinstance(exc, TransactionLost) or cursor.transaction_lost():
                    # Nothing of the batch will be committed: every caller must hear it.
                    raise TransactionLost(
                        f"{self.name}: the batch's transaction was lost in a caller's "
                        f"follow-up work ({exc})"
                    ) from exc
                followed[index] = exc
        return followed

    def _remember(self, fresh: dict[str, Any]) -> None:
        if len(self._known) + len(fresh) > self._known_limit:
            self._known.clear()
        self._known.update(fresh)

    def _opened(self) -> tuple[Connection, WriterSql]:
        """The connection and its SQL; any failure to open them is the store's error
        (a plain one would split the batch as though a caller's rows were at fault)."""
        try:
            return self._connection_and_sql()
        except (StoreError, sa.exc.SQLAlchemyError):
            raise  # a driver's error is mapped by the caller, as for any statement
        except Exception as exc:
            raise StoreError(f"{self.name}: cannot open its connection: {exc!r}") from exc

    def _connection_and_sql(self) -> tuple[Connection, WriterSql]:
        now = self._monotonic()
        if self._connection is not None and now - self._last_used > self._idle_reconnect:
            self._drop_connection(broken=False)
        self._last_used = now
        if self._connection is None:
            self._connection = self._connect()
        if self._sql is None:
            self._sql = self._compile(self._connection)
        return self._connection, self._sql

    def _drop_connection(self, *, broken: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if broken:
                connection.invalidate()
            connection.close()
        except Exception:
            log.debug("%s: closing a broken writer connection failed", self.name, exc_info=True)
