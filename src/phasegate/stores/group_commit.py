"""Group commit: many concurrent writers share one durable transaction.

Written by hand because no well-kept library batches SQLAlchemy work across threads.
Leader/follower: a writer that finds no commit in progress becomes the leader, takes
every operation queued so far (its own included) and runs them in one transaction;
writers arriving meanwhile queue up and wait for the next leader's commit. N
concurrent writers pay about one fsync instead of N, no extra thread hand-off is
needed, and each caller still returns only once *its* write is committed, so an
acknowledged write is exactly as durable as without batching.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

T = TypeVar("T")


class _Operation(Generic[T]):
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[Connection], T]) -> None:
        self.fn = fn
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommitter:
    """Runs submitted operations in shared transactions, led by one of the submitters.

    ``isolate(error)`` says whether a failed batch should be re-run one operation per
    transaction (a data error belongs to one operation); other errors (the store is
    down) fail the whole batch at once, without hammering the store again.
    """

    def __init__(
        self,
        begin: Callable[[], AbstractContextManager[Connection]],
        *,
        isolate: Callable[[BaseException], bool],
        max_batch: int = 512,
        name: str = "store",
    ) -> None:
        self._begin = begin
        self._isolate = isolate
        self._max_batch = max_batch
        self._name = name
        self._queue: deque[_Operation[Any]] = deque()
        self._condition = threading.Condition()
        self._leading = False
        self._closed = False
        self.batches = 0
        self.operations = 0

    def submit(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` in a shared transaction and return once it is committed."""
        operation: _Operation[T] = _Operation(fn)
        with self._condition:
            if self._closed:
                raise RuntimeError(f"{self._name}: store is closed")
            self._queue.append(operation)
        while True:
            with self._condition:
                while not operation.done and self._leading:
                    self._condition.wait()
                if operation.done:
                    break
                self._leading = True
                batch = [
                    self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))
                ]
            try:
                self._commit(batch)
            finally:
                with self._condition:
                    self._leading = False
                    self._condition.notify_all()
        if operation.error is not None:
            raise operation.error
        return operation.result  # type: ignore[no-any-return]

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new work; what is queued is committed by its own writers."""
        with self._condition:
            self._closed = True
            self._condition.wait_for(lambda: not self._queue and not self._leading, timeout)

    def _commit(self, batch: list[_Operation[Any]]) -> None:
        self.batches += 1
        self.operations += len(batch)
        try:
            with self._begin() as connection:
                for operation in batch:
                    operation.result = operation.fn(connection)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting callers
            if len(batch) > 1 and self._isolate(error):
                for operation in batch:
                    self._commit_alone(operation)
                return
            for operation in batch:
                operation.result = None
                operation.error = error
                operation.done = True
            return
        for operation in batch:
            operation.done = True

    def _commit_alone(self, operation: _Operation[Any]) -> None:
        try:
            with self._begin() as connection:
                operation.result = operation.fn(connection)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
            operation.result = None
            operation.error = error
        operation.done = True
