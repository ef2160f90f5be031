"""Which driver each store or transport URL scheme needs, checked before anything imports it.

A URL whose driver is not installed is a :class:`~phasegate.errors.MissingDriverError`
naming the extra to install (``pip install 'phasegate[postgres]'``), not a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec

from phasegate.errors import MissingDriverError


@dataclass(frozen=True, slots=True)
class Driver:
    """The module a scheme imports, how to name it to a person, and the extra that ships it."""

    module: str
    name: str
    extra: str


DRIVERS: dict[str, Driver] = {
    "postgresql": Driver("psycopg", "PostgreSQL", "postgres"),
    "postgres": Driver("psycopg", "PostgreSQL", "postgres"),
    "mysql": Driver("pymysql", "MySQL/MariaDB", "mysql"),
    "mariadb": Driver("pymysql", "MySQL/MariaDB", "mysql"),
    "firestore": Driver("google.cloud.firestore", "Firestore", "gcp"),
    "bigquery": Driver("google.cloud.bigquery", "BigQuery", "gcp"),
    "nats": Driver("nats", "NATS", "nats"),
    "pubsub": Driver("google.cloud.pubsub_v1", "Pub/Sub", "gcp"),
}
"""Schemes that need an optional driver; any other scheme needs none."""


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        # A missing parent package ("google") raises instead of answering None.
        return False


def require_driver(scheme: str) -> None:
    """Raise :class:`MissingDriverError` when ``scheme``'s driver is not installed."""
    driver = DRIVERS.get(scheme.lower())
    if driver is not None and not is_installed(driver.module):
        raise MissingDriverError(scheme.lower(), driver.name, driver.extra)
