"""The thinnest durable dual write this machine can do in Python: a reference, not a product.

Two writer threads, one per SQLite file (WAL, ``synchronous=FULL``), each with one
connection. A caller builds one row, queues it on both writers and waits on one lock that
the second writer to commit releases; each writer takes what is queued (lingering 1 ms
while callers come in groups, as phasegate's writers do), writes it with ``executemany``
(the sticky upsert and the history insert of phasegate's schema, the runs insert for run
keys it has not written), answers each phase-run's successes with one query by run key,
and commits once.

It does what phasegate's ingest must do at the least: no input checks, no claims or
outbox, no breaker, retries, counters or alerts. Its rate, measured in the same run as
phasegate's, is the ceiling of this design (threads, one process) on this machine: the
figure to read each ingest target against.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    pipeline TEXT NOT NULL, run_key TEXT NOT NULL, first_seen_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, run_key));
CREATE TABLE IF NOT EXISTS completions (
    pipeline TEXT NOT NULL, run_key TEXT NOT NULL, phase TEXT NOT NULL,
    processor TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
    correlation_id TEXT, metadata TEXT NOT NULL, occurred_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, run_key, phase, processor, attempt));
CREATE TABLE IF NOT EXISTS history (
    pipeline TEXT NOT NULL, run_key TEXT NOT NULL, phase TEXT NOT NULL,
    processor TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
    correlation_id TEXT, metadata TEXT NOT NULL, occurred_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, run_key, phase, processor, attempt, status, occurred_at));
"""
UPSERT = (
    "INSERT INTO completions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (pipeline, run_key, phase, processor, attempt) DO UPDATE SET "
    "status = excluded.status, correlation_id = excluded.correlation_id, "
    "metadata = excluded.metadata, occurred_at = excluded.occurred_at "
    "WHERE completions.status != 'success'"
)
HISTORY = "INSERT OR IGNORE INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
RUNS = "INSERT OR IGNORE INTO runs VALUES (?, ?, ?)"
PIPELINE = "bench"

Row = tuple[str, str, str, str, int, str, str, str, str]


def row(phase: str, run_key: str, processor: str) -> Row:
    """One success report as the stores keep it (a fresh correlation id, the time now)."""
    now = datetime.now(UTC).isoformat()
    return (PIPELINE, run_key, phase, processor, 1, "success", uuid.uuid4().hex, "{}", now)


Report = tuple[str, str, str]  # phase, run key, processor
Successes = dict[tuple[str, str], frozenset[str]]  # by (phase, run key)


class Call:
    """One caller's rows, answered by both writers; ``done`` runs once both committed."""

    __slots__ = ("_left", "_lock", "answers", "done", "rows")

    def __init__(self, rows: list[Row], done: Callable[[Call], None]) -> None:
        self.rows = rows
        self.done = done
        self.answers: list[dict[tuple[str, str, int], set[str]]] = []
        self._left = 2
        self._lock = threading.Lock()

    def answered(self, found: dict[tuple[str, str, int], set[str]]) -> None:
        with self._lock:
            self.answers.append(found)
            self._left -= 1
            last = self._left == 0
        if last:
            self.done(self)

    def successes(self) -> Successes:
        """Each of the call's phase-runs: who succeeded, in either store."""
        runs = {(r[2], r[1], r[4]) for r in self.rows}
        return {
            (phase, run_key): frozenset().union(
                *(found.get((run_key, phase, attempt), ()) for found in self.answers)
            )
            for phase, run_key, attempt in runs
        }


class Writer:
    """One SQLite file's writer thread."""

    def __init__(self, path: Path, linger: float = 0.001, max_items: int = 512) -> None:
        self._path = path
        self._linger = linger
        self._max_items = max_items
        self._queue: deque[Call] = deque()
        self._queued = 0  # rows queued
        self._cond = threading.Condition()
        self._closed = False
        self._known: set[str] = set()
        self._last_batch = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def submit(self, call: Call) -> None:
        with self._cond:
            self._queue.append(call)
            self._queued += len(call.rows)
            if len(self._queue) == 1 or self._queued >= self._max_items:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _take(self) -> list[Call]:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._queue and self._last_batch > 1:
                deadline = time.monotonic() + self._linger
                while self._queued < self._max_items and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            batch: list[Call] = []
            rows = 0
            while self._queue and (not batch or rows + len(self._queue[0].rows) <= self._max_items):
                batch.append(self._queue.popleft())
                rows += len(batch[-1].rows)
            self._queued -= rows
            self._last_batch = len(batch)
            return batch

    def _loop(self) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(SCHEMA)
        while batch := self._take():
            self._write(connection, batch)
        connection.close()

    def _write(self, connection: sqlite3.Connection, batch: list[Call]) -> None:
        rows = sorted(row for call in batch for row in call.rows)
        keys = sorted({r[1] for r in rows})
        fresh = [(PIPELINE, key, rows[0][8]) for key in keys if key not in self._known]
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(UPSERT, rows)
        connection.executemany(HISTORY, rows)
        if fresh:
            connection.executemany(RUNS, fresh)
        found: dict[tuple[str, str, int], set[str]] = {}
        marks = ", ".join("?" * len(keys))
        for run_key, phase, attempt, processor, status in connection.execute(
            "SELECT run_key, phase, attempt, processor, status FROM completions "
            f"WHERE pipeline = ? AND run_key IN ({marks})",
            [PIPELINE, *keys],
        ):
            if status == "success":
                found.setdefault((run_key, phase, attempt), set()).add(processor)
        connection.execute("COMMIT")
        self._known.update(key for _, key, _ in fresh)
        for call in batch:
            call.answered(found)


class DualWrite:
    """Both writers; ``record*`` block a thread, ``arecord*`` await on an event loop."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._writers = (Writer(directory / "primary.db"), Writer(directory / "backup.db"))

    def _submit(self, call: Call) -> None:
        for writer in self._writers:
            writer.submit(call)

    def record(self, phase: str, run_key: str, processor: str) -> frozenset[str]:
        """Write one report to both stores; the phase-run's successes once both committed."""
        return self.record_many([(phase, run_key, processor)])[(phase, run_key)]

    def record_many(self, reports: list[Report]) -> Successes:
        """Write reports to both stores as one call; their phase-runs' successes."""
        latch = threading.Lock()
        latch.acquire()
        call = Call([row(*report) for report in reports], lambda _call: latch.release())
        self._submit(call)
        latch.acquire()
        return call.successes()

    async def arecord(self, phase: str, run_key: str, processor: str) -> frozenset[str]:
        """:meth:`record` for an event loop: one wake-up of the loop once both committed."""
        return (await self.arecord_many([(phase, run_key, processor)]))[(phase, run_key)]

    async def arecord_many(self, reports: list[Report]) -> Successes:
        """:meth:`record_many` for an event loop."""
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[None] = loop.create_future()

        def done(_call: Call) -> None:
            loop.call_soon_threadsafe(settled.set_result, None)

        call = Call([row(*report) for report in reports], done)
        self._submit(call)
        await settled
        return call.successes()

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
