"""The SQL store on SQLAlchemy Core: SQLite (embedded default), PostgreSQL and MariaDB.

``engines`` (URLs, pragmas, the one driver-error map), ``schema`` (versioned tables),
``statements`` (SQL built once), ``rows`` (records as rows), ``writer`` (the batching
completion writer), ``replication`` (export and merge) and ``store`` (:class:`SqlStore`).
"""

from __future__ import annotations

from phasegate.stores.sql.engines import map_driver_errors, redact_url
from phasegate.stores.sql.schema import SCHEMA_VERSION
from phasegate.stores.sql.store import SqlStore

__all__ = ["SCHEMA_VERSION", "SqlStore", "map_driver_errors", "redact_url"]
