"""The SQL writer and its callers: whatever a caller does with its answer, or whatever
one caller's work raises, the other callers of the batch are answered and the writer
goes on writing."""

from __future__ import annotations

from concurrent.futures import InvalidStateError
from typing import Any

import pytest

from phasegate.errors import StoreError
from phasegate.model import PhaseRun
from store_records import RUN, completion
from support import backends, hold_writer

ALL = backends()
PR = PhaseRun("phase2", RUN)


@ALL
def test_a_queued_write_cannot_be_cancelled_and_is_answered(make_store: Any) -> None:
    """A caller giving up on a queued write cannot cancel it (it will be written all the
    same): cancel() says no, and every caller of the batch is answered."""
    store = make_store(writer_thread=False)
    store.ensure_schema()
    first, gone, after = (store.submit_completions([completion(p)]) for p in ("a", "b", "c"))
    assert gone.cancel() is False
    store.writer.run_once()
    for future in (first, gone, after):  # one batch, one commit, one answer
        assert future.result(timeout=0) == {PR: {"a", "b", "c"}}


@backends("sqlite")
def test_the_writer_outlives_an_answer_it_cannot_give(make_store: Any) -> None:
    """A caller that settled its own future (a misuse): the writer's answer to it fails,
    the thread logs it and goes on, and the writes queued after it are answered."""
    store = make_store()
    store.ensure_schema()
    store.writer.start()
    release = hold_writer(store)
    settled = store.submit_completions([completion("a")])
    settled.set_result({})
    with pytest.raises(InvalidStateError):
        settled.set_result({})
    release.set()
    later = store.submit_completions([completion("b")])
    assert later.result(timeout=10) == {PR: {"a", "b"}}
    assert store.writer.started


@ALL
def test_work_that_raises_fails_only_its_own_caller(make_store: Any) -> None:
    """A work item sharing a batch raises a plain error (a bug, a value the driver cannot
    bind): the batch is written again request by request, so the completions queued with
    it are recorded and only that caller hears the error."""
    store = make_store(writer_thread=False)
    store.ensure_schema()
    mine = store.submit_completions([completion("ok")])

    def broken(_connection: Any) -> None:
        raise ValueError("naive datetime")

    bad = store.writer.submit_work(broken)
    theirs = store.submit_completions([completion("also")])
    store.writer.run_once()
    assert mine.result(timeout=0) == {PR: {"ok"}}
    with pytest.raises(StoreError, match="writer failed: ValueError"):
        bad.result(timeout=0)
    assert theirs.result(timeout=0) == {PR: {"ok", "also"}}
    assert {c.processor for c in store.completions(RUN)} == {"ok", "also"}


@backends("sqlite")
def test_a_connection_that_cannot_be_opened_fails_the_batch_once(make_store: Any) -> None:
    """Opening the connection raises a plain error: no caller's rows are at fault, so
    the batch is not written again request by request (one attempt, one error each)."""
    store = make_store(writer_thread=False)
    store.ensure_schema()
    store.writer._drop_connection(broken=False)
    attempts = [0]

    def broken_connect() -> Any:
        attempts[0] += 1
        raise RuntimeError("no driver today")

    store.writer._connect = broken_connect
    futures = [store.submit_completions([completion(f"p{i}")]) for i in range(5)]
    store.writer.run_once()
    for future in futures:
        with pytest.raises(StoreError, match="cannot open its connection"):
            future.result(timeout=0)
    assert attempts == [1]
