"""The store factory: every store test runs against every backend that can run here.

``store_factory`` is parametrized over the entries of :data:`BACKENDS`. Each entry is a
function ``(request, tmp_path_factory, cleanups) -> Backend``; a :class:`Backend` opens
a store on a fresh, empty database (``fresh(label)``) and opens another handle on the
database of an existing store (``reopen(store)``, what a second replica would hold).

Adding a backend is one entry (see ``_firestore``: a fresh prefix on the session's
Firestore emulator for each store, the same URL for a peer).

Tests declare which capability they need with ``factory.require(Capability.X)``; a
backend that does not declare it is skipped for that test with the reason, never
failed, so an append-only backend runs exactly the tests of what it claims.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from phasegate.stores.base import Capability
from phasegate.stores.memory import MemoryStore
from phasegate.stores.sql import SqlStore
from store_databases import url_maker

PIPELINE = "test-pipeline"

Cleanups = list[Callable[[], None]]


@dataclass
class Backend:
    """How to open stores of one backend for a test."""

    kind: str
    fresh: Callable[[str], Any]
    reopen: Callable[[Any], Any]
    opened: list[Any] = field(default_factory=list)

    def __call__(self, label: str = "primary") -> Any:
        """A store on a fresh, empty database."""
        store = self.fresh(label)
        self.opened.append(store)
        return store

    def peer(self, store: Any) -> Any:
        """Another handle on ``store``'s database (what a second replica holds)."""
        other = self.reopen(store)
        if other is not store:
            self.opened.append(other)
        return other

    def require(self, *capabilities: Capability) -> Any:
        """A fresh store, skipping the test when this backend lacks ``capabilities``."""
        store = self()
        missing = sorted(set(capabilities) - set(store.capabilities))
        if missing:
            pytest.skip(f"{self.kind} does not declare {', '.join(missing)}")
        return store

    def close_all(self) -> None:
        """Close every store this test opened."""
        for store in reversed(self.opened):
            store.close()


def _memory(_request: Any, _tmp: pytest.TempPathFactory, _cleanups: Cleanups) -> Backend:
    return Backend(
        "memory",
        fresh=lambda label: MemoryStore(pipeline=PIPELINE, name=label),
        reopen=lambda store: store,  # one process: every replica shares the object
    )


def _sql(kind: str) -> Callable[[Any, pytest.TempPathFactory, Cleanups], Backend]:
    def build(_request: Any, tmp: pytest.TempPathFactory, cleanups: Cleanups) -> Backend:
        make_url = url_maker(kind, tmp, cleanups)

        def fresh(label: str) -> SqlStore:
            return SqlStore(make_url(label), pipeline=PIPELINE, name=label)

        def reopen(store: SqlStore) -> SqlStore:
            return SqlStore(store.url, pipeline=PIPELINE, name=f"{store.name}-peer")

        return Backend(kind, fresh=fresh, reopen=reopen)

    return build


def _firestore(request: Any, _tmp: pytest.TempPathFactory, _cleanups: Cleanups) -> Backend:
    from phasegate.stores.gcp_urls import open_gcp_store

    emulator = request.getfixturevalue("firestore_emulator")
    request.getfixturevalue("monkeypatch").setenv("FIRESTORE_EMULATOR_HOST", emulator.host)

    def fresh(label: str) -> Any:
        url = f"firestore://phasegate-test?prefix=c{uuid.uuid4().hex[:16]}"
        return open_gcp_store(url, pipeline=PIPELINE, name=label)

    def reopen(store: Any) -> Any:
        return type(store)(store.location, pipeline=PIPELINE, name=f"{store.name}-peer")

    return Backend("firestore", fresh=fresh, reopen=reopen)


BACKENDS: dict[str, Callable[[Any, pytest.TempPathFactory, Cleanups], Backend]] = {
    "memory": _memory,
    "sqlite": _sql("sqlite"),
    "postgres": _sql("postgres"),
    "mysql": _sql("mysql"),
    "firestore": _firestore,
}


def _params() -> list[Any]:
    marks = {"postgres": [pytest.mark.postgres], "mysql": [pytest.mark.mysql]}
    return [pytest.param(kind, marks=marks.get(kind, []), id=kind) for kind in BACKENDS]


@pytest.fixture(params=_params())
def store_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """``store_factory(label)`` opens a store on a fresh database of each backend."""
    kind = request.param
    cleanups: Cleanups = []
    backend = BACKENDS[kind](request, tmp_path_factory, cleanups)
    yield backend
    backend.close_all()
    for cleanup in cleanups:
        cleanup()
