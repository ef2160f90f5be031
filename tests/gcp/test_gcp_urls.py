"""Google Cloud store URLs, emulator variables and the one Google error map (no emulator)."""

from __future__ import annotations

import sys

import pytest
from google.api_core import exceptions as api

from phasegate.errors import ConfigError, StoreError, TransientStoreError
from phasegate.stores.gcp_urls import (
    BigQueryLocation,
    FirestoreLocation,
    emulator_host,
    map_google_errors,
    open_gcp_store,
    parse_bigquery_url,
    parse_firestore_url,
)


def test_firestore_urls_parse_with_defaults_and_options() -> None:
    """firestore://PROJECT takes the default database and prefix; options override them."""
    assert parse_firestore_url("firestore://my-project") == FirestoreLocation("my-project")
    assert parse_firestore_url(
        "firestore://my-project?database=orders-db&prefix=pg_orders"
    ) == FirestoreLocation("my-project", "orders-db", "pg_orders")


def test_bigquery_urls_parse_project_and_dataset() -> None:
    """bigquery://PROJECT/DATASET names both."""
    assert parse_bigquery_url("bigquery://my-project/phasegate_backup") == BigQueryLocation(
        "my-project", "phasegate_backup"
    )


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("firestore://", "names no project"),
        ("firestore://My_Project", "is not a Google Cloud project id"),
        ("firestore://my-project/orders", "has a path"),
        ("firestore://my-project?colour=red", "unknown option(s) colour"),
        ("firestore://my-project?database=Bad_DB", "is not a Firestore database id"),
        ("firestore://my-project?prefix=1abc", "must start with a letter"),
        ("bigquery://my-project", "names no dataset"),
        ("bigquery://my-project/bad-dataset", "must hold only letters"),
        ("bigquery://my-project/ds?x=1", "takes no options"),
        ("bigquery:///ds", "names no project"),
        ("spanner://my-project", "not a Google Cloud store scheme"),
    ],
)
def test_bad_urls_are_refused_naming_what_is_wrong(url: str, complaint: str) -> None:
    """Each malformed URL raises a ConfigError that names the store and the fault."""
    with pytest.raises(ConfigError, match="primary store") as caught:
        open_gcp_store(url, pipeline="p", name="primary")
    assert complaint in str(caught.value)


@pytest.mark.parametrize(
    ("url", "module"),
    [
        ("firestore://my-project", "phasegate.stores.firestore"),
        ("bigquery://my-project/ds", "phasegate.stores.bigquery"),
    ],
)
def test_a_missing_client_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str
) -> None:
    """Without the Google clients, the URL is refused with the pip command to run."""
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=r"pip install 'phasegate\[gcp\]'"):
        open_gcp_store(url, pipeline="p", name="backup")


def test_emulator_variables_are_read_as_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """host:port is taken as is (an http:// prefix dropped); unset or blank means none."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://127.0.0.1:9050")
    assert emulator_host("BIGQUERY_EMULATOR_HOST") == "127.0.0.1:9050"
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", " ")
    assert emulator_host("BIGQUERY_EMULATOR_HOST") is None
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST")
    assert emulator_host("BIGQUERY_EMULATOR_HOST") is None


@pytest.mark.parametrize(
    "error",
    [
        api.Aborted("contention"),
        api.DeadlineExceeded("slow"),
        api.ServiceUnavailable("down"),
        api.ResourceExhausted("quota"),
        api.TooManyRequests("429"),
        api.InternalServerError("500"),
        api.RetryError("gave up", cause=api.ServiceUnavailable("down")),
        ConnectionRefusedError("refused"),
    ],
)
def test_transient_google_errors_become_transient_store_errors(error: Exception) -> None:
    """What a retry can fix maps to TransientStoreError, naming the store."""
    with (
        pytest.raises(TransientStoreError, match="primary") as caught,
        map_google_errors("primary"),
    ):
        raise error
    assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    "error",
    [api.PermissionDenied("no role"), api.NotFound("no dataset"), api.BadRequest("bad")],
)
def test_other_google_errors_become_store_errors(error: Exception) -> None:
    """What a retry cannot fix maps to StoreError, not retried."""
    with pytest.raises(StoreError) as caught, map_google_errors("backup"):
        raise error
    assert not isinstance(caught.value, TransientStoreError)


def test_a_transaction_that_kept_aborting_is_transient() -> None:
    """The client's 'failed to commit' ValueError raised from Aborted counts as contention."""
    with pytest.raises(TransientStoreError), map_google_errors("primary"):
        raise ValueError("Failed to commit transaction in 5 attempts.") from api.Aborted("busy")


def test_programming_errors_pass_through_unmapped() -> None:
    """A bug is not a store error: KeyError and plain ValueError pass as they are."""
    with pytest.raises(KeyError), map_google_errors("primary"):
        raise KeyError("field")
    with pytest.raises(ValueError, match="naive"), map_google_errors("primary"):
        raise ValueError("naive datetime")
