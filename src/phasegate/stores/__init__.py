"""Stores by URL: ``sqlite:///path``, ``postgresql://...``, ``mysql://...``,
``firestore://PROJECT``, ``bigquery://PROJECT/DATASET``, ``memory://NAME``."""

from __future__ import annotations

from typing import Any

from phasegate.drivers import require_driver
from phasegate.errors import ConfigError
from phasegate.stores.base import (
    Capability,
    ClaimRegistry,
    CompletionLog,
    CompletionStore,
    CompletionSubmitter,
    FullStore,
    Outbox,
    PhaseLog,
    Replicable,
    Store,
    merge_completions,
)
from phasegate.stores.memory import MemoryStore


def open_store(url: str, *, pipeline: str, name: str = "store") -> Any:
    """Open the store at ``url`` for ``pipeline``; ``name`` labels it in logs and metrics."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "memory":
        from phasegate.stores.memory import shared_memory_store  # noqa: PLC0415

        key = url.split(":", 1)[1].lstrip("/") or "default"
        return shared_memory_store(f"{key}#{name}", pipeline=pipeline, name=name)
    # Before importing the backend: a missing driver is a clear error, not a traceback.
    require_driver(scheme)
    if scheme in {"sqlite", "postgresql", "postgres", "mysql", "mariadb"}:
        from phasegate.stores.sql import SqlStore  # noqa: PLC0415 - SQLAlchemy loads on demand

        return SqlStore(url, pipeline=pipeline, name=name)
    if scheme in {"firestore", "bigquery"}:
        from phasegate.stores.gcp_urls import open_gcp_store  # noqa: PLC0415 - Google on demand

        return open_gcp_store(url, pipeline=pipeline, name=name)
    raise ConfigError(f"{name} store: unsupported URL scheme {scheme!r}")


__all__ = [
    "Capability",
    "ClaimRegistry",
    "CompletionLog",
    "CompletionStore",
    "CompletionSubmitter",
    "FullStore",
    "MemoryStore",
    "Outbox",
    "PhaseLog",
    "Replicable",
    "Store",
    "merge_completions",
    "open_store",
]
