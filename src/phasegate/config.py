"""The pipeline file (TOML) loaded into frozen, validated models.

Every error names the file, the key and what was expected, e.g.
``pipeline.toml: phases[2].next: unknown phase 'phase9' (known: phase2, phase3)``.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from phasegate.errors import ConfigError, ValidationError
from phasegate.graph import PhaseGraph

# [0-9], not \d: Python's \d matches the digits of every script, and a date written in
# other digits is not the date it looks like (it would be a second run of it).
DEFAULT_RUN_KEY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DEFAULT_PRIMARY_URL = "sqlite:///.phasegate/primary.db"
DEFAULT_BACKUP_URL = "sqlite:///.phasegate/backup.db"
DEFAULT_TRANSPORT = "log:"
CONFIG_ENV = "PHASEGATE_CONFIG"
DEFAULT_CONFIG_NAME = "phasegate.toml"
MAX_RUN_KEY_LENGTH = 128
_SPACE = re.compile(r"\s")


_pattern = functools.lru_cache(maxsize=64)(re.compile)


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
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
        if not run_key.isprintable() or _SPACE.search(run_key) is not None:
            raise ValidationError(
                "run_key",
                f"{run_key!r} contains whitespace or control characters",
                code="bad_run_key",
            )
        if _pattern(self.run_key_pattern).search(run_key) is None:
            raise ValidationError(
                "run_key",
                f"{run_key!r} does not match the pattern {self.run_key_pattern}",
                code="bad_run_key",
            )
        return run_key


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


# The parser builds the models above; it is imported last because it imports them.
from phasegate.config_parse import parse_pipeline  # noqa: E402
