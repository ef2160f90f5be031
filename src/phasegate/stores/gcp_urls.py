"""Google Cloud stores by URL, their clients (emulators honoured), and their one error map.

``firestore://PROJECT[?database=NAME&prefix=NAME]`` opens a
:class:`~phasegate.stores.firestore.FirestoreStore`; ``bigquery://PROJECT/DATASET`` a
:class:`~phasegate.stores.bigquery.BigQueryStore`. Both need the ``gcp`` extra
(``pip install 'phasegate[gcp]'``); without it the URL is refused with that command.

``FIRESTORE_EMULATOR_HOST`` and ``BIGQUERY_EMULATOR_HOST`` (``host:port``) point the
clients at local emulators with anonymous credentials, as Google's own tools do.

Every Google client error becomes a phasegate error in :func:`map_google_errors`: the
tracker retries what is transient without knowing any Google class.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from phasegate.errors import ConfigError, StoreError, TransientStoreError

if TYPE_CHECKING:
    from phasegate.stores.bigquery import BigQueryStore
    from phasegate.stores.firestore import FirestoreStore

FIRESTORE_EMULATOR_HOST = "FIRESTORE_EMULATOR_HOST"
BIGQUERY_EMULATOR_HOST = "BIGQUERY_EMULATOR_HOST"
GCP_EXTRA_HINT = "pip install 'phasegate[gcp]'"

# Project ids: 6-30 lowercase letters, digits, hyphens (older ones may hold a domain and ':').
_PROJECT = re.compile(r"^(?:[a-z][a-z0-9.\-]*:)?[a-z][a-z0-9\-]{4,29}$")
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_DATABASE = re.compile(r"^(?:\(default\)|[a-z][a-z0-9\-]{2,62})$")
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,62}$")


@dataclass(frozen=True, slots=True)
class FirestoreLocation:
    """Where a Firestore store lives: project, database and collection prefix."""

    project: str
    database: str = "(default)"
    prefix: str = "phasegate"


@dataclass(frozen=True, slots=True)
class BigQueryLocation:
    """Where a BigQuery store lives: project and dataset."""

    project: str
    dataset: str


def _split(url: str, scheme: str, name: str) -> tuple[str, str, dict[str, str]]:
    parts = urlsplit(url)
    if parts.scheme.lower() != scheme:
        raise ConfigError(f"{name} store: expected a {scheme}:// URL, got {url!r}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return parts.netloc, parts.path, query


def _check_project(project: str, url: str, name: str) -> str:
    if not project:
        raise ConfigError(f"{name} store: {url!r} names no project (the part after '//')")
    if not _PROJECT.match(project):
        raise ConfigError(
            f"{name} store: {project!r} in {url!r} is not a Google Cloud project id "
            "(6-30 lowercase letters, digits and hyphens, starting with a letter)"
        )
    return project


def parse_firestore_url(url: str, *, name: str = "store") -> FirestoreLocation:
    """Parse ``firestore://PROJECT[?database=NAME&prefix=NAME]``; ConfigError names the fault."""
    project, path, query = _split(url, "firestore", name)
    if path not in {"", "/"}:
        raise ConfigError(
            f"{name} store: {url!r} has a path {path!r}; use "
            "firestore://PROJECT?database=NAME&prefix=NAME"
        )
    unknown = sorted(set(query) - {"database", "prefix"})
    if unknown:
        raise ConfigError(
            f"{name} store: unknown option(s) {', '.join(unknown)} in {url!r} "
            "(known: database, prefix)"
        )
    location = FirestoreLocation(
        project=_check_project(project, url, name),
        database=query.get("database", "(default)"),
        prefix=query.get("prefix", "phasegate"),
    )
    if not _DATABASE.match(location.database):
        raise ConfigError(
            f"{name} store: database {location.database!r} in {url!r} is not a Firestore "
            "database id ('(default)' or 3-63 lowercase letters, digits and hyphens)"
        )
    if not _PREFIX.match(location.prefix):
        raise ConfigError(
            f"{name} store: prefix {location.prefix!r} in {url!r} must start with a letter "
            "and hold only letters, digits, '_' and '-' (at most 63)"
        )
    return location


def parse_bigquery_url(url: str, *, name: str = "store") -> BigQueryLocation:
    """Parse ``bigquery://PROJECT/DATASET``; ConfigError names the fault."""
    project, path, query = _split(url, "bigquery", name)
    if query:
        raise ConfigError(
            f"{name} store: {url!r} takes no options (found {', '.join(sorted(query))})"
        )
    dataset = path.strip("/")
    if not dataset:
        raise ConfigError(f"{name} store: {url!r} names no dataset; use bigquery://PROJECT/DATASET")
    if not _DATASET.match(dataset):
        raise ConfigError(
            f"{name} store: dataset {dataset!r} in {url!r} must hold only letters, digits and '_'"
        )
    return BigQueryLocation(project=_check_project(project, url, name), dataset=dataset)


def emulator_host(variable: str) -> str | None:
    """The ``host:port`` an emulator variable names, or ``None`` when it is unset or empty."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return None
    return value.removeprefix("http://")


def open_gcp_store(url: str, *, pipeline: str, name: str) -> FirestoreStore | BigQueryStore:
    """Open the Firestore or BigQuery store at ``url`` for ``pipeline``.

    Raises ConfigError when the URL is wrong or the ``gcp`` extra is not installed.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "firestore":
        location = parse_firestore_url(url, name=name)
        try:
            from phasegate.stores.firestore import FirestoreStore  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise ConfigError(
                f"{name} store: firestore:// needs the Google Cloud client libraries: "
                f"{GCP_EXTRA_HINT} ({exc})"
            ) from exc
        return FirestoreStore(location, pipeline=pipeline, name=name)
    if scheme == "bigquery":
        bq_location = parse_bigquery_url(url, name=name)
        try:
            from phasegate.stores.bigquery import BigQueryStore  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise ConfigError(
                f"{name} store: bigquery:// needs the Google Cloud client libraries: "
                f"{GCP_EXTRA_HINT} ({exc})"
            ) from exc
        return BigQueryStore(bq_location, pipeline=pipeline, name=name)
    raise ConfigError(f"{name} store: {scheme!r} is not a Google Cloud store scheme")


def _is_transient(exc: BaseException) -> bool:
    from google.api_core import exceptions as api  # noqa: PLC0415 - only with the gcp extra
    from google.auth import exceptions as auth  # noqa: PLC0415

    transient = (
        api.Aborted,
        api.DeadlineExceeded,
        api.ServiceUnavailable,
        api.ResourceExhausted,
        api.TooManyRequests,
        api.InternalServerError,
        api.GatewayTimeout,
        api.BadGateway,
        api.RetryError,
        auth.TransportError,
        ConnectionError,
        TimeoutError,
        OSError,
    )
    return isinstance(exc, transient)


def _is_google(exc: BaseException) -> bool:
    from google.api_core import exceptions as api  # noqa: PLC0415
    from google.auth import exceptions as auth  # noqa: PLC0415

    return isinstance(exc, api.GoogleAPIError | auth.GoogleAuthError)


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


@contextmanager
def map_google_errors(store: str) -> Iterator[None]:
    """Turn Google client errors into ``TransientStoreError`` (retried) or ``StoreError``.

    Transient: Aborted, DeadlineExceeded, Unavailable, ResourceExhausted (429), internal
    and gateway errors, exhausted client retries and connection failures. Every other
    Google error is a ``StoreError``; phasegate's own errors and programming errors pass.
    """
    try:
        yield
    except StoreError:
        raise
    except ValueError as exc:
        # A transaction that kept aborting ends in ValueError("Failed to commit ...")
        # raised from the last Aborted: that is contention, worth retrying.
        if exc.__cause__ is not None and _is_google(exc.__cause__):
            raise TransientStoreError(f"{store}: {_short(exc)}") from exc
        raise
    except Exception as exc:
        # requests' errors derive from OSError; check the transient kinds first.
        if _is_transient(exc):
            raise TransientStoreError(f"{store}: {_short(exc)}") from exc
        if _is_google(exc):
            raise StoreError(f"{store}: {_short(exc)}") from exc
        raise
