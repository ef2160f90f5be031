"""The BigQuery store (``bigquery://PROJECT/DATASET``): an append-only ledger, the backup.

BigQuery is built for appends and scans, not for compare-and-set or row updates (DML
quotas are what the system phasegate replaces fought). So every write appends rows with
streaming inserts (``insert_rows_json``, a deterministic insert id per row, batches of
:data:`INSERT_BATCH`), no DML ever runs, and current state is a query that
de-duplicates at read time, since insert ids are best-effort:

==============  ==========================================================================
table           rows appended, and how a read folds them (``QUALIFY ROW_NUMBER() = 1``)
==============  ==========================================================================
``completions``   every report (current completions and history in one table); current:
                  per identity, the earliest success, else the latest report; history:
                  per identity, status and time, the first row recorded
``outbox``        claimed triggers mirrored from the primary and each delivery event, as a
                  snapshot of the entry; current: delivered first (earliest delivery),
                  else the most attempts
``executions``    phase executions; the first recorded per phase-run is kept
``timeouts``      timeout reports; the first recorded per phase-run is kept
==============  ==========================================================================

Tables (and the dataset) are created on first use, partitioned by day on
``recorded_at`` (when the row was appended) and clustered on ``pipeline, run_key``
(then ``phase`` or ``trigger_id``), which is what every read filters on.

Capabilities: ``completions``, ``phase_log`` and ``replication``. Not ``claims``: a
ledger cannot compare-and-set, so it never arbitrates a claim or a timeout; the
primary's claims, deliveries and timeouts arrive through :meth:`import_records`. Not
``outbox``: it cannot honour the lease contract (two dispatchers could append leases for
the same trigger and neither would know), so it never leases and is never dispatched
from. It still keeps delivery events (:meth:`mark_delivered`,
:meth:`record_delivery_failure`, which the tracker writes to both stores) and answers
:meth:`triggers` for merged reads (:func:`phasegate.reads.keeps_triggers`): a primary
that lost its data must not make a triggered phase-run look untriggered.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from phasegate.errors import StoreError, TransientStoreError
from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseExecution,
    PhaseRun,
    RecordSet,
    TimeoutReport,
)
from phasegate.stores.base import Capability
from phasegate.stores.bigquery_rows import (
    CLUSTERING,
    CURRENT,
    ENTRY,
    FIRST,
    HISTORY,
    SCHEMAS,
    execution_row,
    jsonable,
    row_execution,
    row_id,
    row_timeout,
    timeout_row,
)
from phasegate.stores.gcp_records import (
    Doc,
    chunks,
    completion_doc,
    entry_doc,
    to_completion,
    to_entry,
    utc,
)
from phasegate.stores.gcp_urls import (
    BIGQUERY_EMULATOR_HOST,
    BigQueryLocation,
    emulator_host,
    map_google_errors,
)
from phasegate.stores.memory import prefer_entry

P = ParamSpec("P")
T = TypeVar("T")

INSERT_BATCH = 500  # rows per streaming insert request
CAPABILITIES = frozenset({Capability.COMPLETIONS, Capability.PHASE_LOG, Capability.REPLICATION})
_TRANSIENT_REASONS = {"backendError", "internalError", "timeout", "rateLimitExceeded", "stopped"}


def bigquery_client(location: BigQueryLocation) -> bigquery.Client:
    """A BigQuery client for ``location``; ``BIGQUERY_EMULATOR_HOST`` means anonymous."""
    host = emulator_host(BIGQUERY_EMULATOR_HOST)
    if host is None:
        return bigquery.Client(project=location.project)
    return bigquery.Client(
        project=location.project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=f"http://{host}"),
    )


def _mapped(method: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store: BigQueryStore = args[0]  # type: ignore[assignment]
        with map_google_errors(store.name):
            store.ensure_tables()
            return method(*args, **kwargs)

    return wrapper


class BigQueryStore:
    """The append-only ledger on BigQuery: completions, phase log and replication.

    ``clock`` stamps ``recorded_at`` (UTC now by default); ``client`` may be given, else
    one is built for ``location``, honouring ``BIGQUERY_EMULATOR_HOST``.
    """

    def __init__(
        self,
        location: BigQueryLocation,
        *,
        pipeline: str,
        name: str = "bigquery",
        client: bigquery.Client | None = None,
        clock: Callable[[], datetime] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.location = location
        self.pipeline = pipeline
        self.name = name
        self.client = client or bigquery_client(location)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._timeout = timeout
        self._retry = bigquery.DEFAULT_RETRY.with_deadline(timeout)
        self._dataset = f"{location.project}.{location.dataset}"
        self._ready = False
        self._ready_lock = threading.Lock()
        self._closed = False

    @property
    def capabilities(self) -> frozenset[Capability]:
        """Completions, the phase log and replication: no claims, no leased outbox."""
        return CAPABILITIES

    def table(self, kind: str) -> str:
        """The full id of the table holding ``kind`` rows."""
        return f"{self._dataset}.{kind}"

    def ensure_tables(self) -> None:
        """Create the dataset and the partitioned, clustered tables once (idempotent)."""
        with self._ready_lock:
            if self._ready:
                return
            self.client.create_dataset(self._dataset, exists_ok=True, timeout=self._timeout)
            for kind, columns in SCHEMAS.items():
                table = bigquery.Table(
                    self.table(kind),
                    schema=[bigquery.SchemaField(n, t) for n, t in columns],
                )
                table.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.DAY, field="recorded_at"
                )
                table.clustering_fields = CLUSTERING[kind]
                self.client.create_table(table, exists_ok=True, timeout=self._timeout)
            self._ready = True

    # -- appending and reading -------------------------------------------------------------

    def _append(self, kind: str, docs: Sequence[Mapping[str, Any]]) -> None:
        """Stream ``docs`` into ``kind`` in batches, each row with its insert id."""
        recorded_at = utc(self._clock()).isoformat()
        names = {name for name, _type in SCHEMAS[kind]}
        rows = [
            {**{k: v for k, v in jsonable(doc).items() if k in names}, "pipeline": self.pipeline}
            for doc in docs
        ]
        for batch in chunks(rows, INSERT_BATCH):
            try:
                errors = self.client.insert_rows_json(
                    self.table(kind),
                    [{**row, "recorded_at": recorded_at} for row in batch],
                    row_ids=[row_id(kind, row) for row in batch],
                    retry=self._retry,
                    timeout=self._timeout,
                )
            except api_exceptions.NotFound as exc:
                # A table created moments ago may not take streaming inserts yet, or it was
                # dropped: check the tables again on the next call, which may succeed.
                self._ready = False
                raise TransientStoreError(f"{self.name}: {kind} table not found: {exc}") from exc
            if errors:
                self._raise_insert_errors(kind, errors)

    def _raise_insert_errors(self, kind: str, errors: Sequence[Mapping[str, Any]]) -> None:
        reasons = {e.get("reason", "") for row in errors for e in row.get("errors", ())}
        message = f"{self.name}: streaming insert into {kind} refused {len(errors)} row(s): "
        message += json.dumps(list(errors)[:3], default=str)[:500]
        if reasons <= _TRANSIENT_REASONS:
            raise TransientStoreError(message)
        raise StoreError(message)

    def _query(self, sql: str, **params: Any) -> list[Doc]:
        parameters = [self._parameter(name, value) for name, value in params.items()]
        parameters.append(bigquery.ScalarQueryParameter("pipeline", "STRING", self.pipeline))
        job = self.client.query(
            sql,
            job_config=bigquery.QueryJobConfig(query_parameters=parameters),
            retry=self._retry,
            timeout=self._timeout,
        )
        return [dict(row.items()) for row in job.result(timeout=self._timeout)]

    @staticmethod
    def _parameter(name: str, value: Any) -> Any:
        if isinstance(value, list):
            return bigquery.ArrayQueryParameter(name, "STRING", value)
        kind = "INT64" if isinstance(value, int) else "STRING"
        return bigquery.ScalarQueryParameter(name, kind, value)

    def _latest(self, kind: str, window: str, where: str, **params: Any) -> list[Doc]:
        """The rows of ``kind`` matching ``where``, one per ``window`` partition."""
        sql = (
            f"SELECT * FROM `{self.table(kind)}` WHERE pipeline = @pipeline AND ({where}) "  # noqa: S608 - validated table ids; values are parameters
            f"QUALIFY ROW_NUMBER() OVER ({window}) = 1"
        )
        return self._query(sql, **params)

    # -- completions ---------------------------------------------------------------------

    @_mapped
    def record_completions(
        self, completions: Sequence[Completion]
    ) -> Mapping[PhaseRun, frozenset[str]]:
        """Append the batch, then answer each phase-run's successes from a query.

        A batch over :data:`INSERT_BATCH` rows is several requests: on an error some may
        be durable, which is harmless since reads de-duplicate.
        """
        touched = {c.phase_run for c in completions}
        if not touched:
            return {}
        self._append("completions", [completion_doc(c) for c in completions])
        rows = self._query(
            f"SELECT DISTINCT phase, run_key, attempt, processor FROM `{self.table('completions')}`"  # noqa: S608 - validated table ids; values are parameters
            " WHERE pipeline = @pipeline AND status = 'success' AND run_key IN UNNEST(@run_keys)",
            run_keys=sorted({run.run_key for run in touched}),
        )
        successes: dict[PhaseRun, set[str]] = {run: set() for run in touched}
        for row in rows:
            run = PhaseRun(row["phase"], row["run_key"], int(row["attempt"]))
            if run in successes:
                successes[run].add(row["processor"])
        return {run: frozenset(names) for run, names in successes.items()}

    @_mapped
    def completions(self, run_key: str, phase: str | None = None) -> list[Completion]:
        """The current completion of each processor for ``run_key`` (one phase, or all)."""
        where = "run_key = @run_key" + (" AND phase = @phase" if phase is not None else "")
        params: dict[str, Any] = {"run_key": run_key}
        if phase is not None:
            params["phase"] = phase
        found = [to_completion(r) for r in self._latest("completions", CURRENT, where, **params)]
        return sorted(found, key=lambda c: c.key)

    @_mapped
    def history(self, run_key: str) -> list[Completion]:
        """Every distinct report received for ``run_key``, oldest first."""
        rows = self._latest("completions", HISTORY, "run_key = @run_key", run_key=run_key)
        return sorted(map(to_completion, rows), key=lambda c: (c.occurred_at, c.key))

    @_mapped
    def list_runs(self, limit: int = 50) -> list[str]:
        """The most recent run keys, newest (greatest) first."""
        sql = (
            f"SELECT run_key FROM (SELECT run_key FROM `{self.table('completions')}` "  # noqa: S608 - validated table ids; values are parameters
            "WHERE pipeline = @pipeline UNION DISTINCT "
            f"SELECT run_key FROM `{self.table('outbox')}` WHERE pipeline = @pipeline) "
            "ORDER BY run_key DESC LIMIT @limit"
        )
        return [row["run_key"] for row in self._query(sql, limit=limit)]

    # -- mirrored claims and their delivery events -----------------------------------------

    def _entries(self, where: str, **params: Any) -> list[OutboxEntry]:
        entries = [to_entry(r) for r in self._latest("outbox", ENTRY, where, **params)]
        return sorted(entries, key=lambda e: (e.claimed_at, e.trigger.trigger_id))

    def _append_entries(self, event: str, entries: Sequence[OutboxEntry]) -> None:
        docs = [
            {**entry_doc(e), "trigger_id": e.trigger.trigger_id, "event": event} for e in entries
        ]
        self._append("outbox", docs)

    @_mapped
    def triggers(self, run_key: str) -> list[OutboxEntry]:
        """Every trigger of ``run_key`` mirrored here, oldest first (never leased here)."""
        return self._entries("run_key = @run_key", run_key=run_key)

    def _record_event(
        self, trigger_id: str, event: str, change: Callable[[OutboxEntry], OutboxEntry]
    ) -> None:
        current = self._entries("trigger_id = @trigger_id", trigger_id=trigger_id)
        if current and not current[0].delivered:
            self._append_entries(event, [change(current[0])])

    @_mapped
    def mark_delivered(self, trigger_id: str, delivered_at: datetime) -> None:
        """Append a delivery event for a mirrored trigger (idempotent: first delivery stands)."""
        self._record_event(
            trigger_id,
            "delivered",
            lambda e: replace(
                e, delivered_at=utc(delivered_at), last_error=None, next_attempt_at=None
            ),
        )

    @_mapped
    def record_delivery_failure(
        self, trigger_id: str, error: str, next_attempt_at: datetime
    ) -> None:
        """Append a failed-delivery event for a mirrored, undelivered trigger."""
        self._record_event(
            trigger_id,
            "failed",
            lambda e: replace(
                e,
                attempts=e.attempts + 1,
                last_error=error[:1024],
                next_attempt_at=utc(next_attempt_at),
            ),
        )

    # -- the phase log ---------------------------------------------------------------------

    @_mapped
    def record_phase_execution(self, execution: PhaseExecution) -> None:
        """Append an execution; reads keep the first recorded per phase-run."""
        self._append("executions", [execution_row(execution)])

    @_mapped
    def phase_executions(
        self, phase: str | None = None, limit: int = 100, run_key: str | None = None
    ) -> list[PhaseExecution]:
        """Recent phase executions (of one phase, of one run), newest first."""
        where, params = ["TRUE"], {}
        if phase is not None:
            where.append("phase = @phase")
            params["phase"] = phase
        if run_key is not None:
            where.append("run_key = @run_key")
            params["run_key"] = run_key
        sql = (
            f"SELECT * FROM `{self.table('executions')}` "  # noqa: S608 - validated table ids; values are parameters
            f"WHERE pipeline = @pipeline AND {' AND '.join(where)} "
            f"QUALIFY ROW_NUMBER() OVER ({FIRST}) = 1 ORDER BY triggered_at DESC LIMIT @limit"
        )
        return [row_execution(r) for r in self._query(sql, limit=limit, **params)]

    @_mapped
    def timeouts(self, run_key: str) -> list[TimeoutReport]:
        """The timeout reports of ``run_key`` (mirrored from the primary)."""
        rows = self._latest("timeouts", FIRST, "run_key = @run_key", run_key=run_key)
        return sorted((row_timeout(r) for r in rows), key=lambda t: (t.phase, t.attempt))

    # -- replication -----------------------------------------------------------------------

    @_mapped
    def export_records(self, first_run_key: str, last_run_key: str) -> RecordSet:
        """Everything stored for run keys in ``[first_run_key, last_run_key]``, folded."""
        return self._export(first_run_key, last_run_key)

    def _export(self, first: str, last: str) -> RecordSet:
        where = "run_key BETWEEN @first AND @last"
        params = {"first": first, "last": last}
        current = self._latest("completions", CURRENT, where, **params)
        history = self._latest("completions", HISTORY, where, **params)
        return RecordSet(
            completions=tuple(sorted(map(to_completion, current), key=lambda c: c.key)),
            history=tuple(
                sorted(map(to_completion, history), key=lambda c: (c.occurred_at, c.key))
            ),
            triggers=tuple(self._entries(where, **params)),
            executions=tuple(
                row_execution(r) for r in self._latest("executions", FIRST, where, **params)
            ),
            timeouts=tuple(
                row_timeout(r) for r in self._latest("timeouts", FIRST, where, **params)
            ),
        )

    @_mapped
    def import_records(self, records: RecordSet) -> None:
        """Append what ``records`` adds to what is held (idempotent: reads fold duplicates).

        What is already held is read first, so a repeated import appends nothing: success
        wins, a delivered trigger stays delivered, a held execution or timeout is kept.
        """
        if not len(records):
            return
        keys = sorted(records.run_keys)
        held = self._export(keys[0], keys[-1])
        seen = {(*c.key, c.status, c.occurred_at) for c in held.history}
        reports = {
            (*c.key, c.status, c.occurred_at): c for c in (*records.history, *records.completions)
        }
        self._append(
            "completions", [completion_doc(c) for k, c in reports.items() if k not in seen]
        )
        current = {e.trigger.trigger_id: e for e in held.triggers}
        changed = [
            replace(e, lease_owner=None, lease_expires_at=None)
            for e in records.triggers
            if prefer_entry(current.get(e.trigger.trigger_id), e)
            is not current.get(e.trigger.trigger_id)
        ]
        self._append_entries("import", changed)
        have_runs = {(e.phase, e.run_key, e.attempt) for e in held.executions}
        self._append(
            "executions",
            [
                execution_row(e)
                for e in records.executions
                if (e.phase, e.run_key, e.attempt) not in have_runs
            ],
        )
        have_timeouts = {(t.phase, t.run_key, t.attempt) for t in held.timeouts}
        self._append(
            "timeouts",
            [
                timeout_row(t)
                for t in records.timeouts
                if (t.phase, t.run_key, t.attempt) not in have_timeouts
            ],
        )

    # -- lifecycle -------------------------------------------------------------------------

    @_mapped
    def ping(self) -> None:
        """Fetch the dataset (created on first use) to prove BigQuery answers."""
        self.client.get_dataset(self._dataset, timeout=min(self._timeout, 10.0))

    def close(self) -> None:
        """Close the client's HTTP session (idempotent)."""
        if not self._closed:
            self._closed = True
            self.client.close()  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return (
            f"BigQueryStore(project={self.location.project!r}, "
            f"dataset={self.location.dataset!r}, pipeline={self.pipeline!r})"
        )
