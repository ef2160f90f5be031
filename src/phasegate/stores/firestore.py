"""The Firestore store (``firestore://PROJECT[?database=NAME&prefix=NAME]``): every capability.

Document layout, all under one root collection named by ``prefix`` (default
``phasegate``), one document per pipeline::

    {prefix}/{pipeline}/completions/{phase|run_key|processor|attempt}   current report
    {prefix}/{pipeline}/history/{phase|run_key|processor|attempt|status|occurred_at}
    {prefix}/{pipeline}/phase_runs/{phase|run_key|attempt}   successes of the phase-run
    {prefix}/{pipeline}/runs/{run_key}                       one per run key seen
    {prefix}/{pipeline}/outbox/{trigger_id}                  the claim and its delivery
    {prefix}/{pipeline}/executions/{phase|run_key|attempt}   first record kept
    {prefix}/{pipeline}/timeouts/{phase|run_key|attempt}     compare-and-set

Document ids join percent-encoded parts with ``|``; ``_`` and ``.`` are encoded too, so
an id never holds ``/``, never is ``.`` or ``..`` and never matches ``__.*__``; an id
longer than 500 bytes is replaced by ``h`` and its SHA-256. Every document also keeps
its parts as fields (``run_key``, ``phase``, ...), which the queries filter on.

Every write is one batch conditioned on what it read (see
:mod:`phasegate.stores.firestore_commit`): compare-and-set with no server-side locks.
Completions go in batches of at most :data:`CHUNK` (four writes each at most, within
Firestore's 500 per commit): the completion (success sticky, by
:func:`~phasegate.model.prefer`), its history entry, the run key and the phase-run's
success set, which the batch read and so answers from. Claims and timeouts are
``create`` calls that fail when the document exists; leases and deliveries are
conditional updates of the one outbox document. Queries need Firestore's automatic single-field
indexes only, except :meth:`FirestoreStore.phase_executions` by phase, which needs the
composite index ``executions (phase ASC, triggered_at DESC)``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseExecution,
    PhaseRun,
    RecordSet,
    TimeoutReport,
    Trigger,
)
from phasegate.stores.base import ALL_CAPABILITIES, Capability
from phasegate.stores.firestore_commit import (
    ConditionalCommit,
    completion_merge,
    entry_merge,
    run_optimistic,
)
from phasegate.stores.gcp_records import (
    Doc,
    chunks,
    doc_id,
    entry_doc,
    execution_doc,
    timeout_doc,
    to_completion,
    to_entry,
    to_execution,
    to_timeout,
    utc,
)
from phasegate.stores.gcp_urls import (
    FIRESTORE_EMULATOR_HOST,
    FirestoreLocation,
    emulator_host,
    map_google_errors,
)

P = ParamSpec("P")
T = TypeVar("T")

CHUNK = 100  # completions per commit: at most 4 writes each, within Firestore's 500 per commit


def firestore_client(location: FirestoreLocation) -> firestore.Client:
    """A Firestore client for ``location``; ``FIRESTORE_EMULATOR_HOST`` means anonymous."""
    anonymous = emulator_host(FIRESTORE_EMULATOR_HOST) is not None
    credentials = AnonymousCredentials() if anonymous else None  # type: ignore[no-untyped-call]
    return firestore.Client(
        project=location.project, database=location.database, credentials=credentials
    )


def _mapped(method: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store: FirestoreStore = args[0]  # type: ignore[assignment]
        with map_google_errors(store.name):
            return method(*args, **kwargs)

    return wrapper


class FirestoreStore:
    """Every capability on Firestore, through the official ``google-cloud-firestore`` client.

    Every write is a batch conditioned on what it read (``create`` for a new document,
    an update time precondition otherwise), retried on conflict: compare-and-set with no
    server-side locks, so writers never queue on each other. ``timeout`` bounds each call,
    the client's own retries included. ``client`` may be given (tests, credentials); by
    default one is built for ``location``, honouring ``FIRESTORE_EMULATOR_HOST``.
    """

    def __init__(
        self,
        location: FirestoreLocation,
        *,
        pipeline: str,
        name: str = "firestore",
        client: firestore.Client | None = None,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.location = location
        self.pipeline = pipeline
        self.name = name
        self.client = client or firestore_client(location)
        self._root = self.client.collection(location.prefix).document(doc_id(pipeline))
        retry = Retry(initial=0.1, maximum=1.0, multiplier=2.0, timeout=timeout)
        self._call: dict[str, Any] = {"retry": retry, "timeout": timeout}
        self._sleep = sleep
        self._closed = False

    @property
    def capabilities(self) -> frozenset[Capability]:
        """Every capability."""
        return ALL_CAPABILITIES

    def _collection(self, kind: str) -> Any:
        return self._root.collection(kind)

    def _stream(self, kind: str, **equal: object) -> list[Doc]:
        query = self._collection(kind)
        for field, value in equal.items():
            query = query.where(filter=FieldFilter(field, "==", value))
        return [snap.to_dict() for snap in query.stream(**self._call)]

    def _optimistic(self, refs: Sequence[Any], plan: Callable[[ConditionalCommit], T]) -> T:
        return run_optimistic(
            self.client, refs, plan, call=self._call, sleep=self._sleep, name=self.name
        )

    # -- completions ---------------------------------------------------------------------

    @_mapped
    def record_completions(
        self, completions: Sequence[Completion]
    ) -> Mapping[PhaseRun, frozenset[str]]:
        """Record a batch in commits of :data:`CHUNK`; answer each phase-run's successes.

        A batch larger than one chunk is written chunk by chunk: on an error some chunks
        may be durable, which is harmless since every write is idempotent.
        """
        answer: dict[PhaseRun, frozenset[str]] = {}
        for chunk in chunks(list(completions), CHUNK):
            answer.update(self._merge_completions(chunk, chunk))
        return answer

    def _merge_completions(
        self, current: Sequence[Completion], history: Sequence[Completion]
    ) -> dict[PhaseRun, frozenset[str]]:
        """One commit: merge ``current`` (sticky success) and ``history``; answer successes."""
        kinds = ("completions", "history", "runs", "phase_runs")
        refs, plan = completion_merge({k: self._collection(k) for k in kinds}, current, history)
        return self._optimistic(refs, plan)

    @_mapped
    def completions(self, run_key: str, phase: str | None = None) -> list[Completion]:
        """The current completion of each processor for ``run_key`` (one phase, or all)."""
        filters: dict[str, object] = {"run_key": run_key}
        if phase is not None:
            filters["phase"] = phase
        found = [to_completion(d) for d in self._stream("completions", **filters)]
        return sorted(found, key=lambda c: c.key)

    @_mapped
    def history(self, run_key: str) -> list[Completion]:
        """Every distinct report received for ``run_key``, oldest first."""
        found = [to_completion(d) for d in self._stream("history", run_key=run_key)]
        return sorted(found, key=lambda c: (c.occurred_at, c.key))

    @_mapped
    def list_runs(self, limit: int = 50) -> list[str]:
        """The most recent run keys, newest (greatest) first."""
        query = self._collection("runs").order_by("run_key", direction=firestore.Query.DESCENDING)
        return [snap.get("run_key") for snap in query.limit(limit).stream(**self._call)]

    # -- claims ----------------------------------------------------------------------------

    def _create(self, ref: Any, doc: Doc, also: tuple[Any, Doc] | None = None) -> bool:
        """Create ``ref`` (and set ``also`` in the same commit); False when it exists."""
        batch = self.client.batch()
        batch.create(ref, doc)
        if also is not None:
            batch.set(*also)
        try:
            batch.commit(**self._call)
        except api_exceptions.AlreadyExists:
            return False
        return True

    @_mapped
    def claim_trigger(self, trigger: Trigger) -> bool:
        """Create the outbox document of ``trigger``; ``True`` only for the one creator."""
        run = (
            self._collection("runs").document(doc_id(trigger.run_key)),
            {"run_key": trigger.run_key},
        )
        return self._create(
            self._collection("outbox").document(doc_id(trigger.trigger_id)),
            entry_doc(OutboxEntry(trigger, trigger.triggered_at)),
            also=run,
        )

    @_mapped
    def record_timeout(self, report: TimeoutReport) -> bool:
        """Create the timeout document of the phase-run; ``True`` only for the creator."""
        ref = self._collection("timeouts").document(
            doc_id(report.phase, report.run_key, report.attempt)
        )
        return self._create(ref, timeout_doc(report))

    # -- the outbox ------------------------------------------------------------------------

    @_mapped
    def triggers(self, run_key: str) -> list[OutboxEntry]:
        """Every claimed trigger of ``run_key``, oldest first."""
        found = [to_entry(d) for d in self._stream("outbox", run_key=run_key)]
        return sorted(found, key=lambda e: (e.claimed_at, e.trigger.trigger_id))

    def _due(self, now: datetime) -> list[OutboxEntry]:
        """Due, unleased, undelivered triggers, oldest first."""
        found = [to_entry(d) for d in self._stream("outbox", delivered=False)]
        due = [
            e
            for e in found
            if (e.next_attempt_at is None or e.next_attempt_at <= now) and not e.leased_at(now)
        ]
        return sorted(due, key=lambda e: (e.claimed_at, e.trigger.trigger_id))

    @_mapped
    def pending_triggers(self, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Undelivered triggers due at ``now`` with no live lease, oldest first."""
        return self._due(utc(now))[:limit]

    @_mapped
    def lease_triggers(
        self, owner: str, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[OutboxEntry]:
        """Lease up to ``limit`` due triggers to ``owner``, each by compare-and-set.

        A trigger a concurrent dispatcher leased first fails its precondition and is
        skipped; the triggers left are looked for again, three rounds at most.
        """
        now, lease_until = utc(now), utc(lease_until)
        leased: list[OutboxEntry] = []
        for _round in range(3):
            taken = {e.trigger.trigger_id for e in leased}
            candidates = [e for e in self._due(now) if e.trigger.trigger_id not in taken]
            wanted = candidates[: limit - len(leased)]
            if not wanted:
                break
            for entry in wanted:
                won = self._lease_one(entry.trigger.trigger_id, owner, now, lease_until)
                if won is not None:
                    leased.append(won)
        return sorted(leased, key=lambda e: (e.claimed_at, e.trigger.trigger_id))

    def _lease_one(
        self, trigger_id: str, owner: str, now: datetime, until: datetime
    ) -> OutboxEntry | None:
        ref = self._collection("outbox").document(doc_id(trigger_id))

        def plan(commit: ConditionalCommit) -> OutboxEntry | None:
            doc = commit.found(ref)
            if doc is None:
                return None
            entry = to_entry(doc)
            due = entry.next_attempt_at is None or entry.next_attempt_at <= now
            if entry.delivered or not due or entry.leased_at(now):
                return None
            commit.put(ref, {**doc, "lease_owner": owner, "lease_expires_at": until})
            return entry.leased_to(owner, until)

        return self._optimistic([ref], plan)

    def _update_undelivered(self, trigger_id: str, change: Callable[[OutboxEntry], Doc]) -> None:
        ref = self._collection("outbox").document(doc_id(trigger_id))

        def plan(commit: ConditionalCommit) -> None:
            doc = commit.found(ref)
            if doc is not None and not doc.get("delivered"):
                commit.put(ref, {**doc, **change(to_entry(doc))})

        self._optimistic([ref], plan)

    @_mapped
    def mark_delivered(self, trigger_id: str, delivered_at: datetime) -> None:
        """Record that a transport accepted ``trigger_id`` (idempotent); drops the lease."""
        self._update_undelivered(
            trigger_id,
            lambda _entry: {
                "delivered": True,
                "delivered_at": utc(delivered_at),
                "last_error": None,
                "next_attempt_at": None,
                "lease_owner": None,
                "lease_expires_at": None,
            },
        )

    @_mapped
    def record_delivery_failure(
        self, trigger_id: str, error: str, next_attempt_at: datetime
    ) -> None:
        """Count a failed delivery attempt and when to try again; drops the lease."""
        self._update_undelivered(
            trigger_id,
            lambda entry: {
                "attempts": entry.attempts + 1,
                "last_error": error[:1024],
                "next_attempt_at": utc(next_attempt_at),
                "lease_owner": None,
                "lease_expires_at": None,
            },
        )

    # -- the phase log ---------------------------------------------------------------------

    @_mapped
    def record_phase_execution(self, execution: PhaseExecution) -> None:
        """Keep the first record of each phase-run (a create; an existing one is kept)."""
        key = doc_id(execution.phase, execution.run_key, execution.attempt)
        self._create(self._collection("executions").document(key), execution_doc(execution))

    @_mapped
    def phase_executions(
        self, phase: str | None = None, limit: int = 100, run_key: str | None = None
    ) -> list[PhaseExecution]:
        """Recent phase executions (of one phase, of one run), newest first."""
        if run_key is not None:
            found = [to_execution(d) for d in self._stream("executions", run_key=run_key)]
            found = [e for e in found if phase is None or e.phase == phase]
            return sorted(found, key=lambda e: e.triggered_at, reverse=True)[:limit]
        query = self._collection("executions")
        if phase is not None:
            query = query.where(filter=FieldFilter("phase", "==", phase))
        query = query.order_by("triggered_at", direction=firestore.Query.DESCENDING).limit(limit)
        return [to_execution(s.to_dict()) for s in query.stream(**self._call)]

    @_mapped
    def timeouts(self, run_key: str) -> list[TimeoutReport]:
        """The timeout reports of ``run_key``."""
        found = [to_timeout(d) for d in self._stream("timeouts", run_key=run_key)]
        return sorted(found, key=lambda t: (t.phase, t.attempt))

    # -- replication -----------------------------------------------------------------------

    @_mapped
    def export_records(self, first_run_key: str, last_run_key: str) -> RecordSet:
        """Everything stored for run keys in ``[first_run_key, last_run_key]``."""

        def docs(kind: str) -> list[Doc]:
            query = (
                self._collection(kind)
                .where(filter=FieldFilter("run_key", ">=", first_run_key))
                .where(filter=FieldFilter("run_key", "<=", last_run_key))
            )
            return [snap.to_dict() for snap in query.stream(**self._call)]

        return RecordSet(
            completions=tuple(sorted(map(to_completion, docs("completions")), key=lambda c: c.key)),
            history=tuple(
                sorted(map(to_completion, docs("history")), key=lambda c: (c.occurred_at, c.key))
            ),
            triggers=tuple(
                sorted(
                    map(to_entry, docs("outbox")),
                    key=lambda e: (e.claimed_at, e.trigger.trigger_id),
                )
            ),
            executions=tuple(map(to_execution, docs("executions"))),
            timeouts=tuple(map(to_timeout, docs("timeouts"))),
        )

    @_mapped
    def import_records(self, records: RecordSet) -> None:
        """Merge ``records`` in: success wins, a delivered trigger stays delivered, a claim,
        execution or timeout already held is kept as it is."""
        for chunk in chunks(list(records.completions), CHUNK):
            self._merge_completions(chunk, ())
        for chunk in chunks(list(records.history), CHUNK):
            self._merge_completions((), chunk)
        for entries in chunks(list(records.triggers), 200):
            self._merge_entries(entries)
        executions = {
            doc_id(e.phase, e.run_key, e.attempt): execution_doc(e) for e in records.executions
        }
        timeouts = {doc_id(t.phase, t.run_key, t.attempt): timeout_doc(t) for t in records.timeouts}
        self._create_missing("executions", executions)
        self._create_missing("timeouts", timeouts)

    def _merge_entries(self, entries: Sequence[OutboxEntry]) -> None:
        refs, plan = entry_merge(self._collection("outbox"), self._collection("runs"), entries)
        self._optimistic(refs, plan)

    def _create_missing(self, kind: str, docs: Mapping[str, Doc]) -> None:
        collection = self._collection(kind)
        for keys in chunks(list(docs), 400):
            refs = [collection.document(key) for key in keys]

            def plan(commit: ConditionalCommit, refs: Sequence[Any] = refs) -> None:
                for ref in refs:
                    if commit.found(ref) is None:
                        commit.put(ref, docs[ref.id])

            self._optimistic(refs, plan)

    # -- lifecycle -------------------------------------------------------------------------

    @_mapped
    def ping(self) -> None:
        """One cheap read (of the pipeline's root document) that fails when Firestore cannot."""
        self._root.get(**self._call)

    def close(self) -> None:
        """Close the client's channel (idempotent)."""
        if not self._closed:
            self._closed = True
            self.client.close()  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        location = self.location
        return (
            f"FirestoreStore(project={location.project!r}, database={location.database!r}, "
            f"prefix={location.prefix!r}, pipeline={self.pipeline!r})"
        )
