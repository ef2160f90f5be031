"""Optimistic compare-and-set on Firestore: read, plan conditional writes, commit, repeat.

Firestore's transactions lock what they read on the server, so concurrent writers of
one phase-run queue (and time out) behind each other. The Firestore store writes
instead one batch conditioned on exactly what it read: ``create`` for a document that
was absent, an update-time precondition for one that was there. The batch commits
atomically or not at all; on a conflict the round starts again from a fresh read. This
is the client's public API only (``get_all``, ``batch``, ``write_option``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from google.api_core import exceptions as api_exceptions

from phasegate.errors import TransientStoreError
from phasegate.model import Completion, OutboxEntry, PhaseRun, Status, prefer
from phasegate.stores.gcp_records import (
    Doc,
    completion_doc,
    doc_id,
    entry_doc,
    history_id,
    phase_run_id,
    to_completion,
    to_entry,
)
from phasegate.stores.memory import prefer_entry

T = TypeVar("T")

ATTEMPTS = 20  # rounds before contention is reported as a transient error
CONFLICTS = (
    api_exceptions.FailedPrecondition,
    api_exceptions.AlreadyExists,
    api_exceptions.NotFound,
    api_exceptions.Aborted,
)


class ConditionalCommit:
    """One atomic batch whose every write is conditional on what was read."""

    def __init__(self, client: Any, snaps: Mapping[str, Any]) -> None:
        self.batch = client.batch()
        self.snaps = snaps
        self.writes = 0
        self._client = client

    def found(self, ref: Any) -> Doc | None:
        """The document at ``ref`` as read, or None."""
        snap = self.snaps.get(ref.path)
        return snap.to_dict() if snap is not None and snap.exists else None

    def put(self, ref: Any, doc: Doc) -> None:
        """Create ``ref`` if it was absent, else replace it if unchanged since the read."""
        snap = self.snaps.get(ref.path)
        if snap is not None and snap.exists:
            option = self._client.write_option(last_update_time=snap.update_time)
            self.batch.update(ref, doc, option=option)
        else:
            self.batch.create(ref, doc)
        self.writes += 1


Plan = Callable[[ConditionalCommit], T]


def run_optimistic(
    client: Any,
    refs: Sequence[Any],
    plan: Plan[T],
    *,
    call: Mapping[str, Any],
    sleep: Callable[[float], None],
    name: str = "firestore",
) -> T:
    """Read ``refs``, let ``plan`` add conditional writes, commit; again on a conflict.

    ``call`` holds the retry and timeout of each request; between rounds ``sleep``
    waits a little longer each time so contenders spread out.
    """
    for attempt in range(ATTEMPTS):
        snaps = {s.reference.path: s for s in client.get_all(list(refs), **call)}
        commit = ConditionalCommit(client, snaps)
        result = plan(commit)
        if not commit.writes:
            return result
        try:
            commit.batch.commit(**call)
        except CONFLICTS:
            sleep(min(0.2, 0.002 * 2**attempt))
            continue  # another writer changed what we read: read again
        return result
    raise TransientStoreError(f"{name}: still contended after {ATTEMPTS} optimistic attempts")


def completion_merge(
    collections: Mapping[str, Any], current: Sequence[Completion], history: Sequence[Completion]
) -> tuple[list[Any], Plan[dict[PhaseRun, frozenset[str]]]]:
    """The reads and the plan that merge ``current`` (sticky success, by
    :func:`~phasegate.model.prefer`) and ``history`` (first kept) and note run keys, and
    answer each phase-run's successes from its ``phase_runs`` document."""
    completions_ref, history_ref = collections["completions"], collections["history"]
    runs_ref, phase_runs_ref = collections["runs"], collections["phase_runs"]
    incoming: dict[str, Completion] = {}
    for completion in current:
        key = doc_id(*completion.key)
        incoming[key] = prefer(incoming.get(key), completion)
    new_history = {history_id(c): c for c in reversed(history)}
    run_keys = {c.run_key for c in (*current, *history)}
    phase_runs = {c.phase_run: phase_runs_ref.document(phase_run_id(c.phase_run)) for c in current}
    refs = [
        *(completions_ref.document(k) for k in incoming),
        *(history_ref.document(k) for k in new_history),
        *(runs_ref.document(doc_id(k)) for k in run_keys),
        *phase_runs.values(),
    ]

    def plan(commit: ConditionalCommit) -> dict[PhaseRun, frozenset[str]]:
        before = {
            run: set((commit.found(ref) or {}).get("successes", ()))
            for run, ref in phase_runs.items()
        }
        successes = {run: set(names) for run, names in before.items()}
        for key, completion in incoming.items():
            ref = completions_ref.document(key)
            stored = commit.found(ref)
            held = to_completion(stored) if stored else None
            merged = prefer(held, completion)
            if merged is not held:
                commit.put(ref, completion_doc(merged))
            if merged.status is Status.SUCCESS:
                successes[merged.phase_run].add(merged.processor)
        for key, completion in new_history.items():
            if commit.found(history_ref.document(key)) is None:
                commit.put(history_ref.document(key), completion_doc(completion))
        _note_runs(commit, runs_ref, run_keys)
        for run, names in successes.items():
            if names != before[run]:
                fields = {"phase": run.phase, "run_key": run.run_key, "attempt": run.attempt}
                commit.put(phase_runs[run], {**fields, "successes": sorted(names)})
        return {run: frozenset(names) for run, names in successes.items()}

    return refs, plan


def entry_merge(
    outbox: Any, runs: Any, entries: Sequence[OutboxEntry]
) -> tuple[list[Any], Plan[None]]:
    """The reads and the plan that merge outbox ``entries`` in: delivered stays delivered,
    more attempts win, a copied lease is dropped."""
    incoming: dict[str, OutboxEntry] = {}
    for entry in entries:
        key = doc_id(entry.trigger.trigger_id)
        incoming[key] = prefer_entry(incoming.get(key), entry)
    run_keys = {e.trigger.run_key for e in incoming.values()}
    refs = [*(outbox.document(k) for k in incoming), *(runs.document(doc_id(k)) for k in run_keys)]

    def plan(commit: ConditionalCommit) -> None:
        for key, entry in incoming.items():
            ref = outbox.document(key)
            doc = commit.found(ref)
            current = to_entry(doc) if doc else None
            merged = prefer_entry(current, entry)
            if merged is not current:
                # A lease belongs to the store it was taken on; a copy carries none.
                merged = replace(merged, lease_owner=None, lease_expires_at=None)
                commit.put(ref, entry_doc(merged))
        _note_runs(commit, runs, run_keys)

    return refs, plan


def _note_runs(commit: ConditionalCommit, runs: Any, run_keys: set[str]) -> None:
    for run_key in run_keys:
        ref = runs.document(doc_id(run_key))
        if commit.found(ref) is None:
            commit.put(ref, {"run_key": run_key})
