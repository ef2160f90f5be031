"""The pipeline file (TOML) loaded into frozen, validated models.

Every error names the file, the key and what was expected, e.g.
``pipeline.toml: phases[2].next: unknown phase 'phase9' (known: phase2, phase3)``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from phasegate.errors import ConfigError, ValidationError
from phasegate.graph import GraphError, PhaseGraph

DEFAULT_RUN_KEY_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
DEFAULT_PRIMARY_URL = "sqlite:///.phasegate/primary.db"
DEFAULT_BACKUP_URL = "sqlite:///.phasegate/backup.db"
DEFAULT_TRANSPORT = "log:"
CONFIG_ENV = "PHASEGATE_CONFIG"
DEFAULT_CONFIG_NAME = "phasegate.toml"
MAX_RUN_KEY_LENGTH = 128
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
STORE_SCHEMES = (
    "sqlite",
    "postgresql",
    "postgres",
    "mysql",
    "mariadb",
    "firestore",
    "bigquery",
    "memory",
)
TRANSPORT_SCHEMES = ("log", "http", "https", "nats", "pubsub")


class TimeoutPolicy(StrEnum):
    """What a missed phase timeout does: always alert; ``trigger`` also triggers."""

    ALERT = "alert"
    TRIGGER = "trigger"


class Secret:
    """A value that must never be printed; ``reveal()`` is the only way to read it."""

    __slots__ = ("_source", "_value")

    def __init__(self, value: str, source: str = "inline") -> None:
        self._value = value
        self._source = source

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self._source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def resolve_secret(raw: str, where: str) -> tuple[str, str]:
    """Resolve ``env:NAME`` and ``file:/path`` references; returns ``(value, source)``."""
    if raw.startswith("env:"):
        name = raw[4:]
        if not name:
            raise ConfigError(f"{where}: 'env:' needs a variable name, e.g. env:PHASEGATE_TOKEN")
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return os.environ[name], raw
    if raw.startswith("file:"):
        path = Path(raw[5:]).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip(), "file:" + path.name
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read secret file {path}: {exc.strerror}") from exc
    return raw, "inline"


def parse_duration(text: str) -> timedelta:
    """Parse ``"90s"``, ``"2h"``, ``"1h30m"``, ``"500ms"``, ``"1d"`` into a timedelta."""
    cleaned = text.strip().replace(" ", "")
    if not cleaned:
        raise ValueError("empty duration")
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(cleaned):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(cleaned):
        raise ValueError(
            f"bad duration {text!r}; expected a number and unit (ms, s, m, h, d), "
            "e.g. '90s' or '1h30m'"
        )
    if total <= 0:
        raise ValueError(f"duration {text!r} must be greater than zero")
    return timedelta(seconds=total)


def format_duration(duration: timedelta) -> str:
    """The inverse of :func:`parse_duration`: ``timedelta(minutes=90)`` → ``"1h30m"``."""
    total = duration.total_seconds()
    if total < 1:
        return f"{total * 1000:.0f}ms"
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count:.0f}{unit}")
    return "".join(parts) or "0s"


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase: who must report, who may, what comes next, how long it may take.

    ``processors`` are the required processors: the phase is complete once each has
    succeeded. ``optional`` processors report the same way and show in status, but the
    phase does not wait for them.
    """

    name: str
    processors: tuple[str, ...]
    next_phases: tuple[str, ...] = ()
    timeout: timedelta | None = None
    on_timeout: TimeoutPolicy = TimeoutPolicy.ALERT
    optional: tuple[str, ...] = ()

    @property
    def next(self) -> str | None:
        """The first of ``next_phases``, or ``None`` (what a phase had when it had one)."""
        return self.next_phases[0] if self.next_phases else None

    @property
    def required(self) -> tuple[str, ...]:
        """The processors the phase waits for (the same as ``processors``)."""
        return self.processors

    @property
    def all_processors(self) -> tuple[str, ...]:
        """Every processor that may report in this phase: required, then optional."""
        return self.processors + self.optional


@dataclass(frozen=True, slots=True)
class StoresConfig:
    """Where records are written: two independently failing stores."""

    primary: str = DEFAULT_PRIMARY_URL
    backup: str = DEFAULT_BACKUP_URL


@dataclass(frozen=True, slots=True)
class TriggersConfig:
    """How triggers leave phasegate."""

    transport: str = DEFAULT_TRANSPORT


@dataclass(frozen=True, slots=True)
class ResilienceConfig:
    """Retry and breaker settings for store writes and trigger delivery (SPEC §3 defaults)."""

    retry_attempts: int = 3
    retry_base: timedelta = timedelta(seconds=1)
    primary_max_delay: timedelta = timedelta(seconds=10)
    backup_max_delay: timedelta = timedelta(seconds=15)
    jitter: str = "additive"
    breaker_reset: timedelta = timedelta(seconds=30)
    delivery_attempts: int = 3
    redelivery_base: timedelta = timedelta(seconds=5)
    claim_fallback: str = "defer"


@dataclass(frozen=True, slots=True)
class SlackConfig:
    """``[alerts.slack]``: an incoming webhook."""

    webhook_url: Secret
    min_severity: str = "warning"
    repeat_interval: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class LogAlertsConfig:
    """``[alerts.log]``: alerts as log lines."""

    min_severity: str = "warning"


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """``[alerts]``: where alerts go."""

    slack: SlackConfig | None = None
    log: LogAlertsConfig | None = None
    queue_size: int = 1000
    repeat_interval: timedelta = timedelta(hours=1)

    @property
    def enabled(self) -> bool:
        """At least one sink is configured."""
        return self.slack is not None or self.log is not None


GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


@dataclass(frozen=True, slots=True)
class PubSubPushConfig:
    """``[server.pubsub_push]``: how Pub/Sub's authenticated push is verified and what a
    malformed message does.

    ``audience`` turns on OIDC verification of Google-signed tokens, accepted only from the
    ``allowed_service_accounts``; ``dead_letter`` acknowledges malformed messages (logged
    and alerted) instead of answering 400, which Pub/Sub would redeliver until expiry.
    """

    audience: str | None = None
    allowed_service_accounts: tuple[str, ...] = ()
    certs_url: str = GOOGLE_CERTS_URL
    dead_letter: bool = False


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


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of ``phasegate serve``."""

    token: Secret | None = None
    read_token: Secret | None = None
    pubsub_push: PubSubPushConfig | None = None
    health_cache: timedelta = timedelta(seconds=30)
    health_timeout: timedelta = timedelta(seconds=2)
    timeout_check_interval: timedelta = timedelta(minutes=1)
    reconcile_interval: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A validated pipeline: ordered phases and where their records go."""

    name: str
    phases: tuple[Phase, ...]
    run_key_pattern: str = DEFAULT_RUN_KEY_PATTERN
    stores: StoresConfig = field(default_factory=StoresConfig)
    triggers: TriggersConfig = field(default_factory=TriggersConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    source: Path | None = None
    graph: PhaseGraph = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once: the orchestrator asks graph questions on every claim.
        object.__setattr__(
            self, "graph", PhaseGraph.build([(p.name, p.next_phases) for p in self.phases])
        )

    def phase(self, name: str) -> Phase:
        """The phase called ``name``; a ValidationError lists the known ones otherwise."""
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise ValidationError(
            "phase",
            f"unknown phase {name!r}; expected one of: {', '.join(p.name for p in self.phases)}",
            code="unknown_phase",
        )

    def previous(self, name: str) -> Phase | None:
        """The first phase whose ``next`` names ``name``, if any (see :meth:`upstream`)."""
        upstream = self.upstream(name)
        return self.phase(upstream[0]) if upstream else None

    def upstream(self, name: str) -> tuple[str, ...]:
        """The phases that trigger ``name`` directly, in file order."""
        return self.graph.upstream(self.phase(name).name)

    def downstream(self, name: str) -> tuple[str, ...]:
        """The phases ``name`` triggers directly (its ``next``)."""
        return self.graph.downstream(self.phase(name).name)

    def descendants(self, name: str) -> tuple[str, ...]:
        """Every phase downstream of ``name``, transitively, in file order."""
        return self.graph.descendants(self.phase(name).name)

    def roots(self) -> tuple[str, ...]:
        """The phases no other phase triggers: where each run starts."""
        return self.graph.roots()

    def validate_run_key(self, run_key: str) -> str:
        """Return ``run_key`` if it matches the pattern, else raise a ValidationError."""
        if not isinstance(run_key, str) or not run_key:
            raise ValidationError("run_key", "must be a non-empty string", code="bad_run_key")
        if len(run_key) > MAX_RUN_KEY_LENGTH:
            raise ValidationError(
                "run_key", f"longer than {MAX_RUN_KEY_LENGTH} characters", code="bad_run_key"
            )
        if not run_key.isprintable() or any(ch.isspace() for ch in run_key):
            raise ValidationError(
                "run_key",
                f"{run_key!r} contains whitespace or control characters",
                code="bad_run_key",
            )
        if re.search(self.run_key_pattern, run_key) is None:
            raise ValidationError(
                "run_key",
                f"{run_key!r} does not match the pattern {self.run_key_pattern}",
                code="bad_run_key",
            )
        return run_key


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

    head = reader.table(data, "pipeline", "pipeline")
    reader.known_keys(head, {"name", "run_key_pattern"}, "pipeline")
    name = reader.string(head, "name", "pipeline.name")
    if not _NAME.match(name):
        raise reader.fail("pipeline.name", f"{name!r} must be letters, digits, '_', '-' or '.'")
    pattern = reader.string(
        head, "run_key_pattern", "pipeline.run_key_pattern", DEFAULT_RUN_KEY_PATTERN
    )
    try:
        re.compile(pattern)
    except re.error as exc:
        raise reader.fail("pipeline.run_key_pattern", f"invalid regular expression: {exc}") from exc

    stores_table = reader.table(data, "stores", "stores")
    reader.known_keys(stores_table, {"primary", "backup"}, "stores")
    urls = {}
    for role, default in (("primary", DEFAULT_PRIMARY_URL), ("backup", DEFAULT_BACKUP_URL)):
        raw = reader.string(stores_table, role, f"stores.{role}", default)
        url, _ = resolve_secret(raw, f"{source}: stores.{role}")
        _check_url(reader, url, f"stores.{role}", STORE_SCHEMES)
        urls[role] = url
    if urls["primary"] == urls["backup"]:
        raise reader.fail("stores.backup", "must differ from stores.primary (they must fail apart)")

    triggers_table = reader.table(data, "triggers", "triggers")
    reader.known_keys(triggers_table, {"transport"}, "triggers")
    transport, _ = resolve_secret(
        reader.string(triggers_table, "transport", "triggers.transport", DEFAULT_TRANSPORT),
        f"{source}: triggers.transport",
    )
    _check_url(reader, transport, "triggers.transport", TRANSPORT_SCHEMES)

    server_table = reader.table(data, "server", "server")
    reader.known_keys(
        server_table,
        {
            "token",
            "read_token",
            "health_cache",
            "health_timeout",
            "timeout_check_interval",
            "reconcile_interval",
            "pubsub_push",
        },
        "server",
    )
    token = _server_secret(reader, server_table, "token", source)
    read_token = _server_secret(reader, server_table, "read_token", source)
    if read_token is not None and token is None:
        raise reader.fail("server.read_token", "needs server.token (the token for writes) too")

    phases = _parse_phases(reader, data.get("phases"))
    resilience = _parse_resilience(reader, reader.table(data, "resilience", "resilience"))
    alerts = _parse_alerts(reader, reader.table(data, "alerts", "alerts"), source)
    return Pipeline(
        name=name,
        phases=phases,
        run_key_pattern=pattern,
        stores=StoresConfig(primary=urls["primary"], backup=urls["backup"]),
        triggers=TriggersConfig(transport=transport),
        server=ServerConfig(
            token=token,
            read_token=read_token,
            pubsub_push=_parse_pubsub_push(reader, server_table),
            health_cache=_duration(
                reader, server_table, "health_cache", "server", timedelta(seconds=30)
            ),
            health_timeout=_duration(
                reader, server_table, "health_timeout", "server", timedelta(seconds=2)
            ),
            timeout_check_interval=_duration(
                reader, server_table, "timeout_check_interval", "server", timedelta(minutes=1)
            ),
            reconcile_interval=_duration(
                reader, server_table, "reconcile_interval", "server", timedelta(minutes=10)
            ),
        ),
        resilience=resilience,
        alerts=alerts,
        source=None if source.startswith("<") else Path(source),
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
        if not _NAME.match(name):
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
        if not isinstance(processor, str) or not _NAME.match(processor):
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


def loads_pipeline(text: str, source: str = "<string>") -> Pipeline:
    """Parse pipeline TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return parse_pipeline(data, source)


def load_pipeline(path: str | os.PathLike[str]) -> Pipeline:
    """Read and validate the pipeline file at ``path``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: pipeline file not found") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read pipeline file: {exc.strerror}") from exc
    return loads_pipeline(text, str(file))


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The pipeline file: ``--config``, then ``$PHASEGATE_CONFIG``, then ``./phasegate.toml``."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    candidate = Path.cwd() / DEFAULT_CONFIG_NAME
    if candidate.exists():
        return candidate
    raise ConfigError(
        f"no pipeline file: pass --config FILE, set {CONFIG_ENV}, or create ./{DEFAULT_CONFIG_NAME}"
    )
