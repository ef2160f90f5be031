"""Shared fixtures: fake time, and stores on every backend this machine can run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gcp.emulators import FirestoreEmulator, start_emulator
from phasegate.stores.sql import SqlStore
from phasegate.testing import FakeClock
from store_databases import url_maker
from support import Harness

StoreFactory = Callable[..., SqlStore]


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock; ``clock.sleep`` advances it instantly."""
    return FakeClock()


@pytest.fixture
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], str]]:
    """``store_url(label)`` makes a fresh, empty database URL on the backend under test."""
    cleanups: list[Callable[[], None]] = []
    yield url_maker(getattr(request, "param", "sqlite"), tmp_path_factory, cleanups)
    for cleanup in cleanups:
        cleanup()


@pytest.fixture
def make_store(store_url: Callable[[str], str]) -> Iterator[StoreFactory]:
    """``make_store(label)`` opens a store on a fresh database of the backend under test."""
    opened: list[SqlStore] = []

    def make(label: str = "primary", *, url: str | None = None, **kwargs: object) -> SqlStore:
        store = SqlStore(url or store_url(label), pipeline="test-pipeline", name=label, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def harness_backend() -> str:
    """The stores a :func:`harness` runs on; a test module overrides this fixture with
    ``params`` to run on several backends."""
    return "sqlite"


@pytest.fixture
def harness(harness_backend: str, tmp_path: Path, clock: FakeClock) -> Iterator[Harness]:
    """A runtime on fresh stores, a fake clock and an in-memory transport."""
    rig = Harness(tmp_path, clock, backend=harness_backend)
    yield rig
    rig.runtime.close()


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[FirestoreEmulator]:
    """Google's Firestore emulator, one per test session (the store contract suite and the
    Google Cloud tests share it)."""
    emulator = start_emulator("Firestore", FirestoreEmulator)
    yield emulator
    emulator.stop()
