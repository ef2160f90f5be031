"""Group commit: many concurrent writers share one durable transaction.

Written by hand because no well-kept library batches SQLAlchemy work across threads.
A single writer thread per store takes every operation queued while the previous
commit was in flight and runs them in one transaction, so N concurrent writers pay
about one fsync instead of N. Each caller still waits for *its* commit before it
returns, so an acknowledged write is durable exactly as without batching.
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
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommitter:
    """Runs submitted operations in shared transactions on one background thread.

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
        self._thread: threading.Thread | None = None
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
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"phasegate-commit-{self._name}", daemon=True
                )
                self._thread.start()
            self._condition.notify()
        operation.done.wait()
        if operation.error is not None:
            raise operation.error
        return operation.result  # type: ignore[no-any-return]

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the writer thread."""
        with self._condition:
            self._closed = True
            self._condition.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closed:
                    self._condition.wait()
                if not self._queue:
                    return
                batch = [
                    self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))
                ]
            self._commit(batch)

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
                operation.done.set()
            return
        for operation in batch:
            operation.done.set()

    def _commit_alone(self, operation: _Operation[Any]) -> None:
        try:
            with self._begin() as connection:
                operation.result = operation.fn(connection)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
            operation.result = None
            operation.error = error
        operation.done.set()
