"""Stores by URL: ``sqlite:///path``, ``postgresql://...``, ``mysql://...``."""

from __future__ import annotations

from phasegate.drivers import require_driver
from phasegate.errors import ConfigError
from phasegate.stores.base import CompletionStore, merge_completions

_NOT_YET = frozenset({"firestore", "bigquery"})


def open_store(url: str, *, pipeline: str, name: str = "store") -> CompletionStore:
    """Open the store at ``url`` for ``pipeline``; ``name`` labels it in logs and metrics."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in _NOT_YET:
        # Said first: installing a driver would not help. Remove a scheme from
        # _NOT_YET when its backend lands; the driver check below then covers it.
        raise ConfigError(
            f"{name} store: {scheme}:// is not available in this release yet; "
            "use sqlite:///, postgresql:// or mysql://"
        )
    # Before importing the backend: a missing driver is a clear error, not a traceback.
    require_driver(scheme)
    if scheme in {"sqlite", "postgresql", "postgres", "mysql", "mariadb"}:
        from phasegate.stores.sql import SqlStore  # noqa: PLC0415 - SQLAlchemy loads on demand

        return SqlStore(url, pipeline=pipeline, name=name)
    raise ConfigError(f"{name} store: unsupported URL scheme {scheme!r}")


__all__ = ["CompletionStore", "merge_completions", "open_store"]
