"""Parsing a pipeline file's tables into the models of :mod:`phasegate.config`.

Every error names the file, the key and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace as dataclass_replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from phasegate.config import (
    DEFAULT_BACKUP_URL,
    DEFAULT_PRIMARY_URL,
    DEFAULT_RUN_KEY_PATTERN,
    DEFAULT_TRANSPORT,
    GOOGLE_CERTS_URL,
    NAME_PATTERN,
    STORE_SCHEMES,
    TRANSPORT_SCHEMES,
    AlertsConfig,
    LogAlertsConfig,
    Phase,
    Pipeline,
    PubSubPushConfig,
    ResilienceConfig,
    Secret,
    ServerConfig,
    SlackConfig,
    StoresConfig,
    TimeoutPolicy,
    TriggersConfig,
    parse_duration,
    resolve_secret,
)
from phasegate.errors import ConfigError
from phasegate.graph import GraphError, PhaseGraph


def _parse_pubsub_push(reader: _Reader, server: Mapping[str, Any]) -> PubSubPushConfig | None:
    if "pubsub_push" not in server:
        return None
    path = "server.pubsub_push"
    table = reader.table(server, "pubsub_push", path)
    reader.known_keys(
        table, {"audience", "allowed_service_accounts", "certs_url", "dead_letter"}, path
    )
    audience = reader.string(table, "audience", f"{path}.audience", "") or None
    accounts = table.get("allowed_service_accounts", [])
    if not isinstance(accounts, list) or not all(isinstance(a, str) and "@" in a for a in accounts):
        raise reader.fail(
            f"{path}.allowed_service_accounts",
            "expected an array of service-account emails, e.g. "
            '["pubsub-push@my-project.iam.gserviceaccount.com"]',
        )
    if audience and not accounts:
        raise reader.fail(
            f"{path}.allowed_service_accounts",
            "is required with audience: any Google account can mint a token for any audience",
        )
    if accounts and not audience:
        raise reader.fail(f"{path}.audience", "is required with allowed_service_accounts")
    certs_url = reader.string(table, "certs_url", f"{path}.certs_url", GOOGLE_CERTS_URL)
    if not certs_url.startswith(("https://", "http://")):
        raise reader.fail(f"{path}.certs_url", f"expected an http(s) URL, got {certs_url!r}")
    dead_letter = table.get("dead_letter", False)
    if not isinstance(dead_letter, bool):
        raise reader.fail(
            f"{path}.dead_letter", f"expected true or false, got {_kind(dead_letter)}"
        )
    return PubSubPushConfig(audience, tuple(a.lower() for a in accounts), certs_url, dead_letter)


class _Reader:
    """Pulls typed values out of a TOML table and names the key when one is wrong."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}")

    def table(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a table, got {_kind(value)}")
        return value

    def string(
        self, data: Mapping[str, Any], key: str, path: str, default: str | None = None
    ) -> str:
        value = data.get(key, default)
        if value is None:
            raise self.fail(path, "is required")
        if not isinstance(value, str):
            raise self.fail(path, f"expected a string, got {_kind(value)}")
        return value

    def known_keys(self, data: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(
                    f"{path}.{key}" if path else key,
                    f"unknown key; expected one of: {', '.join(sorted(allowed))}",
                )


def _kind(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _check_url(reader: _Reader, url: str, key: str, schemes: tuple[str, ...]) -> None:
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""
    if scheme not in schemes:
        raise reader.fail(
            key, f"unsupported URL scheme {scheme or url!r}; expected one of: {', '.join(schemes)}"
        )


def parse_pipeline(data: Mapping[str, Any], source: str = "<pipeline>") -> Pipeline:
    """Validate a parsed TOML document into a :class:`Pipeline`."""
    reader = _Reader(source)
    reader.known_keys(
        data,
        {
            "pipeline",
            "stores",
            "triggers",
            "phases",
            "server",
            "resilience",
            "alerts",
            "drift",
            "audit",  # read by `phasegate audit --config` (phasegate.audit.load_settings)
        },
        "",
    )

    name, pattern = _parse_head(reader, reader.table(data, "pipeline", "pipeline"))
    return Pipeline(
        name=name,
        phases=_parse_phases(reader, data.get("phases")),
        run_key_pattern=pattern,
        stores=_parse_stores(reader, reader.table(data, "stores", "stores"), source),
        triggers=_parse_triggers(reader, reader.table(data, "triggers", "triggers"), source),
        server=_parse_server(reader, reader.table(data, "server", "server"), source),
        resilience=_parse_resilience(reader, reader.table(data, "resilience", "resilience")),
        alerts=_parse_alerts(reader, reader.table(data, "alerts", "alerts"), source),
        source=None if source.startswith("<") else Path(source),
    )


def _parse_head(reader: _Reader, head: Mapping[str, Any]) -> tuple[str, str]:
    """``[pipeline]``: the name and the run-key pattern."""
    reader.known_keys(head, {"name", "run_key_pattern"}, "pipeline")
    name = reader.string(head, "name", "pipeline.name")
    if not NAME_PATTERN.match(name):
        raise reader.fail("pipeline.name", f"{name!r} must be letters, digits, '_', '-' or '.'")
    pattern = reader.string(
        head, "run_key_pattern", "pipeline.run_key_pattern", DEFAULT_RUN_KEY_PATTERN
    )
    try:
        re.compile(pattern)
    except re.error as exc:
        raise reader.fail("pipeline.run_key_pattern", f"invalid regular expression: {exc}") from exc
    return name, pattern


def _parse_stores(reader: _Reader, table: Mapping[str, Any], source: str) -> StoresConfig:
    """``[stores]``: two URLs that must differ."""
    reader.known_keys(table, {"primary", "backup"}, "stores")
    urls = {}
    for role, default in (("primary", DEFAULT_PRIMARY_URL), ("backup", DEFAULT_BACKUP_URL)):
        raw = reader.string(table, role, f"stores.{role}", default)
        url, _ = resolve_secret(raw, f"{source}: stores.{role}")
        _check_url(reader, url, f"stores.{role}", STORE_SCHEMES)
        urls[role] = url
    if urls["primary"] == urls["backup"]:
        raise reader.fail("stores.backup", "must differ from stores.primary (they must fail apart)")
    return StoresConfig(primary=urls["primary"], backup=urls["backup"])


def _parse_triggers(reader: _Reader, table: Mapping[str, Any], source: str) -> TriggersConfig:
    """``[triggers]``: the transport URL."""
    reader.known_keys(table, {"transport"}, "triggers")
    transport, _ = resolve_secret(
        reader.string(table, "transport", "triggers.transport", DEFAULT_TRANSPORT),
        f"{source}: triggers.transport",
    )
    _check_url(reader, transport, "triggers.transport", TRANSPORT_SCHEMES)
    return TriggersConfig(transport=transport)


_SERVER_DURATIONS = {
    "health_cache": timedelta(seconds=30),
    "health_timeout": timedelta(seconds=2),
    "timeout_check_interval": timedelta(minutes=1),
    "reconcile_interval": timedelta(minutes=10),
}


def _parse_server(reader: _Reader, table: Mapping[str, Any], source: str) -> ServerConfig:
    """``[server]``: tokens, cache and loop intervals, Pub/Sub push."""
    reader.known_keys(table, {"token", "read_token", "pubsub_push", *_SERVER_DURATIONS}, "server")
    token = _server_secret(reader, table, "token", source)
    read_token = _server_secret(reader, table, "read_token", source)
    if read_token is not None and token is None:
        raise reader.fail("server.read_token", "needs server.token (the token for writes) too")
    durations = {
        key: _duration(reader, table, key, "server", default)
        for key, default in _SERVER_DURATIONS.items()
    }
    return ServerConfig(
        token=token,
        read_token=read_token,
        pubsub_push=_parse_pubsub_push(reader, table),
        **durations,
    )


def _server_secret(
    reader: _Reader, table: Mapping[str, Any], key: str, source: str
) -> Secret | None:
    if key not in table:
        return None
    value, origin = resolve_secret(
        reader.string(table, key, f"server.{key}"), f"{source}: server.{key}"
    )
    if not value:
        raise reader.fail(f"server.{key}", "is empty")
    return Secret(value, origin)


def _parse_resilience(reader: _Reader, table: Mapping[str, Any]) -> ResilienceConfig:
    defaults = ResilienceConfig()
    counts = {"retry_attempts", "delivery_attempts"}
    durations = {
        "retry_base",
        "primary_max_delay",
        "backup_max_delay",
        "breaker_reset",
        "redelivery_base",
    }
    reader.known_keys(table, counts | durations | {"jitter", "claim_fallback"}, "resilience")
    values: dict[str, Any] = {}
    for key in counts & table.keys():
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
            raise reader.fail(
                f"resilience.{key}", f"expected a whole number from 1 to 100, got {value!r}"
            )
        values[key] = value
    for key in durations & table.keys():
        raw = table[key]
        if not isinstance(raw, str):
            raise reader.fail(
                f"resilience.{key}", f"expected a duration string such as '1s', got {_kind(raw)}"
            )
        try:
            values[key] = parse_duration(raw)
        except ValueError as exc:
            raise reader.fail(f"resilience.{key}", str(exc)) from exc
    if "jitter" in table:
        jitter = table["jitter"]
        if jitter not in {"full", "decorrelated", "additive"}:
            raise reader.fail(
                "resilience.jitter", f"{jitter!r}; expected one of: additive, decorrelated, full"
            )
        values["jitter"] = jitter
    if "claim_fallback" in table:
        fallback = table["claim_fallback"]
        if fallback not in {"defer", "backup"}:
            raise reader.fail(
                "resilience.claim_fallback",
                f"{fallback!r}; expected one of: defer (only the primary decides claims), "
                "backup (the backup decides while the primary is out)",
            )
        values["claim_fallback"] = fallback
    return dataclass_replace(defaults, **values)


_SEVERITIES = ("info", "warning", "critical")


def _severity(reader: _Reader, table: Mapping[str, Any], path: str) -> str:
    value = reader.string(table, "min_severity", f"{path}.min_severity", "warning")
    if value not in _SEVERITIES:
        raise reader.fail(
            f"{path}.min_severity", f"{value!r}; expected one of: {', '.join(_SEVERITIES)}"
        )
    return value


def _duration(
    reader: _Reader, table: Mapping[str, Any], key: str, path: str, default: timedelta
) -> timedelta:
    if key not in table:
        return default
    raw = table[key]
    if not isinstance(raw, str):
        raise reader.fail(
            f"{path}.{key}", f"expected a duration string such as '1h', got {_kind(raw)}"
        )
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise reader.fail(f"{path}.{key}", str(exc)) from exc


def _parse_alerts(reader: _Reader, table: Mapping[str, Any], source: str) -> AlertsConfig:
    reader.known_keys(table, {"slack", "log", "queue_size", "repeat_interval"}, "alerts")
    repeat = _duration(reader, table, "repeat_interval", "alerts", timedelta(hours=1))
    queue_size = table.get("queue_size", 1000)
    if (
        not isinstance(queue_size, int)
        or isinstance(queue_size, bool)
        or not 1 <= queue_size <= 1_000_000
    ):
        raise reader.fail(
            "alerts.queue_size", f"expected a whole number from 1 to 1000000, got {queue_size!r}"
        )
    slack = None
    if "slack" in table:
        slack_table = reader.table(table, "slack", "alerts.slack")
        reader.known_keys(
            slack_table, {"webhook_url", "min_severity", "repeat_interval"}, "alerts.slack"
        )
        raw = reader.string(slack_table, "webhook_url", "alerts.slack.webhook_url")
        url, origin = resolve_secret(raw, f"{source}: alerts.slack.webhook_url")
        if not url.startswith(("https://", "http://")):
            raise reader.fail(
                "alerts.slack.webhook_url", "expected an https:// incoming-webhook URL"
            )
        slack = SlackConfig(
            webhook_url=Secret(url, origin),
            min_severity=_severity(reader, slack_table, "alerts.slack"),
            repeat_interval=_duration(
                reader, slack_table, "repeat_interval", "alerts.slack", repeat
            ),
        )
    log_config = None
    if "log" in table:
        log_table = reader.table(table, "log", "alerts.log")
        reader.known_keys(log_table, {"min_severity"}, "alerts.log")
        log_config = LogAlertsConfig(min_severity=_severity(reader, log_table, "alerts.log"))
    return AlertsConfig(slack=slack, log=log_config, queue_size=queue_size, repeat_interval=repeat)


def _parse_phases(reader: _Reader, raw: object) -> tuple[Phase, ...]:
    if raw is None:
        raise reader.fail("phases", "is required: declare at least one [[phases]] table")
    if not isinstance(raw, list) or not raw:
        raise reader.fail("phases", "expected a non-empty array of [[phases]] tables")
    phases: list[Phase] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        path = f"phases[{index}]"
        if not isinstance(item, Mapping):
            raise reader.fail(path, f"expected a table, got {_kind(item)}")
        reader.known_keys(
            item, {"name", "processors", "optional", "next", "timeout", "on_timeout"}, path
        )
        name = reader.string(item, "name", f"{path}.name")
        if not NAME_PATTERN.match(name):
            raise reader.fail(f"{path}.name", f"{name!r} must be letters, digits, '_', '-' or '.'")
        if name in seen:
            raise reader.fail(
                f"{path}.name", f"duplicate phase {name!r} (first at phases[{seen[name]}])"
            )
        seen[name] = index
        processors = _names(reader, item.get("processors"), f"{path}.processors", required=True)
        optional = _names(reader, item.get("optional", []), f"{path}.optional", required=False)
        for position, processor in enumerate(optional):
            if processor in processors:
                raise reader.fail(
                    f"{path}.optional[{position}]",
                    f"processor {processor!r} is listed in both processors and optional; "
                    "list each processor once (processors = required)",
                )
        phases.append(
            Phase(
                name,
                processors,
                _next_phases(reader, item.get("next"), f"{path}.next"),
                _phase_timeout(reader, item, path),
                _timeout_policy(reader, item, path),
                optional,
            )
        )
    _check_graph(reader, phases)
    return tuple(phases)


def _names(reader: _Reader, raw: object, path: str, *, required: bool) -> tuple[str, ...]:
    """A list of processor names: valid, each once, and non-empty when ``required``."""
    if not isinstance(raw, list) or (required and not raw):
        wanted = "a non-empty array" if required else "an array"
        raise reader.fail(path, f"expected {wanted} of processor names")
    for position, processor in enumerate(raw):
        where = f"{path}[{position}]"
        if not isinstance(processor, str) or not NAME_PATTERN.match(processor):
            raise reader.fail(where, f"{processor!r} is not a valid processor name")
        if processor in raw[:position]:
            raise reader.fail(where, f"processor {processor!r} is listed twice")
    return tuple(raw)


def _next_phases(reader: _Reader, raw: object, path: str) -> tuple[str, ...]:
    """``next``: absent, one phase name, or an array of phase names."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and all(isinstance(name, str) for name in raw):
        return tuple(raw)
    raise reader.fail(path, f"expected a phase name or an array of phase names, got {_kind(raw)}")


def _phase_timeout(reader: _Reader, item: Mapping[str, Any], path: str) -> timedelta | None:
    if "timeout" not in item:
        return None
    raw_timeout = item["timeout"]
    if not isinstance(raw_timeout, str):
        raise reader.fail(
            f"{path}.timeout",
            f"expected a duration string such as '2h', got {_kind(raw_timeout)}",
        )
    try:
        return parse_duration(raw_timeout)
    except ValueError as exc:
        raise reader.fail(f"{path}.timeout", str(exc)) from exc


def _timeout_policy(reader: _Reader, item: Mapping[str, Any], path: str) -> TimeoutPolicy:
    raw_policy = reader.string(item, "on_timeout", f"{path}.on_timeout", TimeoutPolicy.ALERT.value)
    try:
        return TimeoutPolicy(raw_policy)
    except ValueError:
        raise reader.fail(
            f"{path}.on_timeout", f"{raw_policy!r}; expected one of: alert, trigger"
        ) from None


def _check_graph(reader: _Reader, phases: list[Phase]) -> None:
    """Validate the ``next`` links as a graph, naming the key of the phase at fault."""
    try:
        PhaseGraph.build([(p.name, p.next_phases) for p in phases])
    except GraphError as exc:
        index = next((i for i, p in enumerate(phases) if p.name == exc.at), None)
        raise reader.fail("phases" if index is None else f"phases[{index}].next", str(exc)) from exc
