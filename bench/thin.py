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

``DualWrite(directory, claims_at=N)`` adds the least a claim needs, the ceiling of a
path that claims: in the primary's transaction, each phase-run of the batch that now
has ``N`` successes and no trigger yet (the triggers of the batch's run keys read with
one query) gets its trigger (a uuid5 id, the message as JSON) and its execution record;
once both writers committed, the caller copies what it won to the backup (inserted
where absent, in the backup writer's next transaction) and waits for that commit too.
No status, attempts, reruns, announcement or delivery.
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

import orjson

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
CLAIMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS triggers (
    pipeline TEXT NOT NULL, trigger_id TEXT NOT NULL, run_key TEXT NOT NULL,
    phase TEXT NOT NULL, attempt INTEGER NOT NULL, message TEXT NOT NULL,
    claimed_at TEXT NOT NULL, delivered_at TEXT, PRIMARY KEY (pipeline, trigger_id));
CREATE INDEX IF NOT EXISTS triggers_pending ON triggers (pipeline, delivered_at, claimed_at);
CREATE INDEX IF NOT EXISTS triggers_run ON triggers (pipeline, run_key);
CREATE TABLE IF NOT EXISTS executions (
    pipeline TEXT NOT NULL, run_key TEXT NOT NULL, phase TEXT NOT NULL,
    attempt INTEGER NOT NULL, triggered_at TEXT NOT NULL, processors TEXT NOT NULL,
    trigger_id TEXT NOT NULL, PRIMARY KEY (pipeline, run_key, phase, attempt));
"""
TRIGGER = "INSERT OR IGNORE INTO triggers VALUES (?, ?, ?, ?, ?, ?, ?, NULL)"
EXECUTION = "INSERT OR IGNORE INTO executions VALUES (?, ?, ?, ?, ?, ?, ?)"
PIPELINE = "bench"
NAMESPACE = uuid.UUID("6f1c7a52-8d1e-4b8a-9a57-3c1d2e4f5a60")

Row = tuple[str, str, str, str, int, str, str, str, str]


def row(phase: str, run_key: str, processor: str) -> Row:
    """One success report as the stores keep it (a fresh correlation id, the time now)."""
    now = datetime.now(UTC).isoformat()
    return (PIPELINE, run_key, phase, processor, 1, "success", uuid.uuid4().hex, "{}", now)


Report = tuple[str, str, str]  # phase, run key, processor
Successes = dict[tuple[str, str], frozenset[str]]  # by (phase, run key)
Claim = tuple[tuple[object, ...], tuple[object, ...]]  # a trigger row, its execution row


def claim(run_key: str, phase: str, attempt: int, names: set[str], correlation: str) -> Claim:
    """The trigger and execution rows of a phase-run claimed now."""
    trigger_id = str(uuid.uuid5(NAMESPACE, f"{PIPELINE}\x1f{phase}\x1f{run_key}"))
    now = datetime.now(UTC).isoformat()
    processors = sorted(names)
    message = orjson.dumps(
        {
            "trigger_id": trigger_id,
            "pipeline": PIPELINE,
            "phase": phase,
            "next_phase": None,
            "next_phases": [],
            "ready_phases": [],
            "run_key": run_key,
            "reason": "complete",
            "correlation_id": correlation,
            "processors": processors,
            "missing": [],
            "triggered_at": now,
            "attempt": attempt,
        }
    ).decode()
    return (
        (PIPELINE, trigger_id, run_key, phase, attempt, message, now),
        (PIPELINE, run_key, phase, attempt, now, orjson.dumps(processors).decode(), trigger_id),
    )


class Call:
    """One caller's rows, answered by both writers; ``done`` runs once both committed."""

    __slots__ = ("_left", "_lock", "answers", "copies", "done", "rows", "won")

    def __init__(
        self,
        rows: list[Row],
        done: Callable[[Call], None],
        copies: list[Claim] | None = None,
        writers: int = 2,
    ) -> None:
        self.rows = rows
        self.done = done
        self.copies = copies or []  # claims to copy into the backup
        self.won: list[Claim] = []  # claims the primary made for this call
        self.answers: list[dict[tuple[str, str, int], set[str]]] = []
        self._left = writers
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

    def __init__(
        self,
        path: Path,
        linger: float = 0.001,
        max_items: int = 512,
        claims_at: int | None = None,
    ) -> None:
        self._path = path
        self._claims_at = claims_at  # claim a phase-run at this many successes
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
            self._queued += len(call.rows) + len(call.copies)
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
            while self._queue and (not batch or rows + _size(self._queue[0]) <= self._max_items):
                batch.append(self._queue.popleft())
                rows += _size(batch[-1])
            self._queued -= rows
            self._last_batch = len(batch)
            return batch

    def _loop(self) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(SCHEMA + CLAIMS_SCHEMA)
        while batch := self._take():
            self._write(connection, batch)
        connection.close()

    def _write(self, connection: sqlite3.Connection, batch: list[Call]) -> None:
        rows = sorted(row for call in batch for row in call.rows)
        keys = sorted({r[1] for r in rows})
        fresh = [(PIPELINE, key, rows[0][8]) for key in keys if key not in self._known]
        copies = [copy for call in batch for copy in call.copies]
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(UPSERT, rows)
        connection.executemany(HISTORY, rows)
        if fresh:
            connection.executemany(RUNS, fresh)
        found: dict[tuple[str, str, int], set[str]] = {}
        marks = ", ".join("?" * len(keys))
        if keys:
            for run_key, phase, attempt, processor, status in connection.execute(
                "SELECT run_key, phase, attempt, processor, status FROM completions "
                f"WHERE pipeline = ? AND run_key IN ({marks})",
                [PIPELINE, *keys],
            ):
                if status == "success":
                    found.setdefault((run_key, phase, attempt), set()).add(processor)
        if self._claims_at is not None and keys:
            self._claim(connection, batch, found, keys)
        if copies:
            connection.executemany(TRIGGER, [trigger for trigger, _ in copies])
            connection.executemany(EXECUTION, [execution for _, execution in copies])
        connection.execute("COMMIT")
        self._known.update(key for _, key, _ in fresh)
        for call in batch:
            call.answered(found)

    def _claim(
        self,
        connection: sqlite3.Connection,
        batch: list[Call],
        found: dict[tuple[str, str, int], set[str]],
        keys: list[str],
    ) -> None:
        """Claim each phase-run of the batch that is complete and has no trigger yet,
        crediting it to the batch's first call that reported it."""
        marks = ", ".join("?" * len(keys))
        held = {
            (run_key, phase, attempt)
            for run_key, phase, attempt in connection.execute(
                f"SELECT run_key, phase, attempt FROM triggers "
                f"WHERE pipeline = ? AND run_key IN ({marks})",
                [PIPELINE, *keys],
            )
        }
        won: list[Claim] = []
        for call in batch:
            for r in call.rows:
                run = (r[1], r[2], r[4])
                if run in held or len(found.get(run, ())) < (self._claims_at or 0):
                    continue
                held.add(run)
                call.won.append(claim(r[1], r[2], r[4], found[run], r[6]))
                won.append(call.won[-1])
        if won:
            connection.executemany(TRIGGER, [trigger for trigger, _ in won])
            connection.executemany(EXECUTION, [execution for _, execution in won])


def _size(call: Call) -> int:
    return len(call.rows) + len(call.copies)


class DualWrite:
    """Both writers; ``record*`` block a thread, ``arecord*`` await on an event loop.

    ``claims_at``: claim each phase-run once it has this many successes (see the module
    docstring); ``record_many`` then also waits for the claims' copy to the backup."""

    def __init__(self, directory: Path, claims_at: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._writers = (
            Writer(directory / "primary.db", claims_at=claims_at),
            Writer(directory / "backup.db"),
        )

    def _submit(self, call: Call) -> None:
        for writer in self._writers:
            writer.submit(call)

    def record(self, phase: str, run_key: str, processor: str) -> frozenset[str]:
        """Write one report to both stores; the phase-run's successes once both committed."""
        return self.record_many([(phase, run_key, processor)])[(phase, run_key)]

    def record_many(self, reports: list[Report]) -> Successes:
        """Write reports to both stores as one call; their phase-runs' successes (and what
        the call claimed copied to the backup)."""
        latch = threading.Lock()
        latch.acquire()
        call = Call([row(*report) for report in reports], lambda _call: latch.release())
        self._submit(call)
        latch.acquire()
        if call.won:
            copy = Call([], lambda _call: latch.release(), copies=call.won, writers=1)
            self._writers[1].submit(copy)
            latch.acquire()
        return call.successes()

    def claimed(self) -> list[tuple[str, int]]:
        """Each claimed phase-run's run key, and how many stores hold its trigger and its
        execution record (after :meth:`close`)."""
        counts: dict[str, int] = {}
        for writer in self._writers:
            with sqlite3.connect(writer._path) as connection:
                for (run_key,) in connection.execute(
                    "SELECT t.run_key FROM triggers t JOIN executions e "
                    "ON e.pipeline = t.pipeline AND e.trigger_id = t.trigger_id"
                ):
                    counts[run_key] = counts.get(run_key, 0) + 1
        return sorted(counts.items())

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
