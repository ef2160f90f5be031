"""One error map: each exception's exit code, HTTP status, code and message, and missing drivers."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from phasegate.cli import main
from phasegate.errors import (
    ERROR_MAP,
    BothStoresFailed,
    CircuitOpenError,
    ConfigError,
    DeliveryError,
    MissingDriverError,
    PhasegateError,
    StoreError,
    StoreUnavailable,
    TransientDeliveryError,
    TransientStoreError,
    ValidationError,
    describe_error,
)
from phasegate.redact import Scrubber


@pytest.mark.parametrize(
    ("error", "exit_code", "status", "code"),
    [
        (ValidationError("run_key", "bad", code="bad_run_key"), 1, 422, "bad_run_key"),
        (ValidationError("body", "not an object", code="malformed_body"), 1, 400, "malformed_body"),
        (ConfigError("stores.primary: is required"), 2, 500, "config_error"),
        (MissingDriverError("postgresql", "PostgreSQL", "postgres"), 2, 500, "missing_driver"),
        (BothStoresFailed("record", OSError("a"), OSError("b")), 3, 503, "stores_unavailable"),
        (StoreUnavailable("primary skipped"), 3, 503, "stores_unavailable"),
        (TransientStoreError("locked"), 3, 503, "stores_unavailable"),
        (StoreError("schema too new"), 1, 500, "internal"),
        (DeliveryError("410 gone"), 1, 502, "delivery_failed"),
        (TransientDeliveryError("503"), 1, 502, "delivery_failed"),
        (CircuitOpenError("primary", 3.0), 3, 503, "unavailable"),
        (PhasegateError("something else"), 1, 500, "internal"),
        (RuntimeError("a bug"), 1, 500, "internal"),
    ],
)
def test_each_error_maps_to_one_exit_code_status_and_code(
    error: BaseException, exit_code: int, status: int, code: str
) -> None:
    """The table answers the same for the CLI and HTTP; the most specific class wins."""
    info = describe_error(error)
    assert (info.exit_code, info.http_status, info.code) == (exit_code, status, code)
    assert info.message
    assert info.cli_line.startswith(f"{info.label}: ")


def test_every_phasegate_exception_has_a_row_or_inherits_one() -> None:
    """Each class in errors.py is in the map itself or under a class that is."""

    def subclasses(cls: type[PhasegateError]) -> set[type[PhasegateError]]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    for cls in subclasses(PhasegateError) | {PhasegateError}:
        assert any(base in ERROR_MAP for base in cls.__mro__), cls


def test_validation_errors_name_the_field_and_keep_the_message() -> None:
    """A ValidationError's field and message reach the HTTP body as they are."""
    info = describe_error(ValidationError("processor", "'ghost' is not expected"))
    assert info.to_dict() == {
        "code": "invalid",
        "message": "'ghost' is not expected",
        "field": "processor",
    }
    assert info.cli_line == "rejected: processor: 'ghost' is not expected"


def test_stores_down_tells_http_clients_less_than_the_operator() -> None:
    """The HTTP message is generic; the CLI line names both stores' errors."""
    info = describe_error(BothStoresFailed("record", OSError("disk full"), None))
    assert "disk full" not in info.message
    assert "retry later" in info.message
    assert "disk full" in info.cli_line


def test_unexpected_errors_answer_a_generic_message() -> None:
    """A bug's text never reaches an HTTP client; it is flagged to be alerted."""
    info = describe_error(RuntimeError("internal detail /etc/x"))
    assert info.unexpected
    assert "internal detail" not in info.message


def test_secrets_never_appear_in_error_messages() -> None:
    """Known secrets and secret-shaped strings are masked in both messages."""
    scrubber = Scrubber(["hunter2-secret"])
    error = BothStoresFailed(
        "record",
        OSError("postgresql://u:pw@db/x refused; token=hunter2-secret"),
        OSError("https://hooks.slack.com/services/T1/B2/XYZ"),
    )
    info = describe_error(error, scrubber.scrub)
    for text in (info.message, info.detail, info.cli_line):
        assert "hunter2-secret" not in text
        assert ":pw@" not in text
        assert "XYZ" not in text


# -- a missing driver is a clear error ---------------------------------------------------------

PIPELINE = """
[pipeline]
name = "orders"

[stores]
primary = "{primary}"
backup = "sqlite:///{dir}/backup.db"

[triggers]
transport = "{transport}"

[[phases]]
name = "extract"
processors = ["api"]
"""


@pytest.mark.parametrize(
    ("primary", "module", "message"),
    [
        (
            "postgresql://u@127.0.0.1/db",
            "psycopg",
            "postgresql:// needs the PostgreSQL driver: pip install 'phasegate[postgres]'",
        ),
        (
            "postgresql+psycopg://u@127.0.0.1/db",
            "psycopg",
            "postgresql:// needs the PostgreSQL driver: pip install 'phasegate[postgres]'",
        ),
        (
            "mysql://root@127.0.0.1/test",
            "pymysql",
            "mysql:// needs the MySQL/MariaDB driver: pip install 'phasegate[mysql]'",
        ),
    ],
)
def test_a_missing_driver_exits_2_naming_the_extra_without_a_traceback(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    primary: str,
    module: str,
    message: str,
) -> None:
    """The real entry point, with the driver's module made unimportable: exit 2 and the extra."""
    config = tmp_path / "phasegate.toml"
    config.write_text(PIPELINE.format(primary=primary, transport="log:", dir=tmp_path))
    # None in sys.modules makes find_spec answer None and any import fail, as if uninstalled.
    monkeypatch.setitem(sys.modules, module, None)
    code = main(["status", "--config", str(config)])
    out, err = capsys.readouterr()
    assert code == 2
    assert err == f"configuration error: {message}\n"
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    ("scheme", "module", "message"),
    [
        ("firestore", "google.cloud.firestore", "firestore:// needs the Firestore driver"),
        ("bigquery", "google.cloud.bigquery", "bigquery:// needs the BigQuery driver"),
        ("nats", "nats", "nats:// needs the NATS driver: pip install 'phasegate[nats]'"),
        ("pubsub", "google.cloud.pubsub_v1", "pubsub:// needs the Pub/Sub driver"),
    ],
)
def test_the_cloud_and_bus_schemes_name_their_extra_too(
    monkeypatch: pytest.MonkeyPatch, scheme: str, module: str, message: str
) -> None:
    """The same check, ready for the stores and transports that need gcp or nats."""
    from phasegate.drivers import require_driver

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDriverError, match=re.escape(message)) as info:
        require_driver(scheme)
    assert describe_error(info.value).exit_code == 2


def test_a_missing_parent_package_is_a_missing_driver_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """find_spec raising for a missing namespace ("google") still means "not installed"."""
    from phasegate import drivers

    def raising(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name.split('.', maxsplit=1)[0]!r}")

    monkeypatch.setattr(drivers, "find_spec", raising)
    with pytest.raises(MissingDriverError) as info:
        drivers.require_driver("firestore")
    assert info.value.extra == "gcp"
    drivers.require_driver("sqlite")
