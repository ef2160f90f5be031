"""Fixtures for the Google Cloud tests: private emulators and store factories on them.

``firestore_emulator`` / ``bigquery_emulator`` start one emulator per session;
``firestore_host`` / ``bigquery_host`` point the environment variables at it for one
test; ``firestore_store_factory`` / ``bigquery_store_factory`` open stores on a fresh
prefix or dataset each; ``private_firestore_emulator`` is a test's own emulator, for
fault tests that kill it (``restart_empty()``).

A test uses either ``firestore_host`` (the shared emulator) or
``private_firestore_emulator``, not both: each points ``FIRESTORE_EMULATOR_HOST`` at its
own emulator. Stores opened by URL (``open_store``, a runtime) follow the variable.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from emulators import BigQueryEmulator, FirestoreEmulator
from emulators import start_emulator as _start

FIRESTORE_PROJECT = "phasegate-test"
BIGQUERY_PROJECT = "phasegate-test"
PIPELINE = "test-pipeline"


@pytest.fixture
def private_firestore_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[FirestoreEmulator]:
    """A Firestore emulator of this test alone (``FIRESTORE_EMULATOR_HOST`` points at it)."""
    emulator = _start("Firestore", FirestoreEmulator)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    yield emulator
    emulator.stop()


@pytest.fixture
def firestore_host(firestore_emulator: FirestoreEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``FIRESTORE_EMULATOR_HOST`` set to the session's emulator for this test."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
    return firestore_emulator.host


@pytest.fixture(scope="session")
def bigquery_emulator() -> Iterator[BigQueryEmulator]:
    """The BigQuery emulator (bqemulator), one per test session."""
    emulator = _start("BigQuery", lambda: BigQueryEmulator(BIGQUERY_PROJECT))
    yield emulator
    emulator.stop()


@pytest.fixture
def bigquery_host(bigquery_emulator: BigQueryEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``BIGQUERY_EMULATOR_HOST`` set to the session's emulator for this test."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.host)
    return bigquery_emulator.host


@pytest.fixture
def firestore_url(firestore_host: str) -> Callable[[], str]:
    """``firestore_url()`` makes the URL of a fresh, empty store (its own prefix)."""
    del firestore_host
    return lambda: f"firestore://{FIRESTORE_PROJECT}?prefix=t{uuid.uuid4().hex[:16]}"


@pytest.fixture
def firestore_store_factory(firestore_url: Callable[[], str]) -> Iterator[Callable[..., Any]]:
    """``make(label, url=None)`` opens a Firestore store on a fresh prefix (or on ``url``)."""
    from phasegate.stores.gcp_urls import open_gcp_store

    opened: list[Any] = []

    def make(label: str = "primary", *, url: str | None = None) -> Any:
        store = open_gcp_store(url or firestore_url(), pipeline=PIPELINE, name=label)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def bigquery_url(bigquery_host: str) -> Callable[[], str]:
    """``bigquery_url()`` makes the URL of a fresh, empty store (its own dataset)."""
    del bigquery_host
    return lambda: f"bigquery://{BIGQUERY_PROJECT}/t{uuid.uuid4().hex[:16]}"


@pytest.fixture
def bigquery_store_factory(bigquery_url: Callable[[], str]) -> Iterator[Callable[..., Any]]:
    """``make(label, url=None)`` opens a BigQuery store on a fresh dataset (or on ``url``)."""
    from phasegate.stores.gcp_urls import open_gcp_store

    opened: list[Any] = []

    def make(label: str = "backup", *, url: str | None = None) -> Any:
        store = open_gcp_store(url or bigquery_url(), pipeline=PIPELINE, name=label)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
