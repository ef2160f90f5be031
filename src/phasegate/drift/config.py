"""The ``[drift]`` table: which services run from which source folders, and where to ask."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phasegate.errors import ConfigError

PROVIDERS = ("gcloud-functions", "cloud-run", "manifest:", "command:")


DEFAULT_ISSUE_LABEL = "deployment-drift"


@dataclass(frozen=True, slots=True)
class ServiceSources:
    """One deployed service, the paths (or ``auto:`` entry files) its code comes from, its
    own provider when it differs from ``[drift] provider``, and how to redeploy it."""

    name: str
    sources: tuple[str, ...]
    provider: str | None = None
    deploy: str | None = None


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Drift settings, validated."""

    services: tuple[ServiceSources, ...]
    repo: Path = Path(".")
    stale_hours: float = 24.0
    provider: str = "gcloud-functions"
    region: str | None = None
    project: str | None = None
    sha_label: str = "commit-sha"
    concurrency: int = 8
    timeout: float = 60.0
    issue_label: str = DEFAULT_ISSUE_LABEL
    base: Path = Path(".")


def _check_provider(source: str, key: str, provider: object) -> str:
    if not isinstance(provider, str) or not (
        provider in {"gcloud-functions", "cloud-run"}
        or provider.startswith(("manifest:", "command:"))
    ):
        raise _fail(
            source,
            key,
            f"{provider!r}; expected gcloud-functions, cloud-run, manifest:FILE or command:PROGRAM",
        )
    return provider


def _parse_service(source: str, name: str, spec: object) -> ServiceSources:
    key = f'drift.services."{name}"'
    if not isinstance(spec, Mapping):
        raise _fail(source, key, "expected a table with sources = [...]")
    sources = spec.get("sources")
    if (
        not isinstance(sources, list)
        or not sources
        or not all(isinstance(s, str) and s for s in sources)
    ):
        raise _fail(source, f"{key}.sources", "expected a non-empty array of paths (or auto:FILE)")
    extra = set(spec) - {"sources", "provider", "deploy"}
    if extra:
        raise _fail(
            source,
            f"{key}.{sorted(extra)[0]}",
            "unknown key; expected one of: deploy, provider, sources",
        )
    provider = spec.get("provider")
    if provider is not None:
        provider = _check_provider(source, f"{key}.provider", provider)
    deploy = spec.get("deploy")
    if deploy is not None and (not isinstance(deploy, str) or not deploy.strip()):
        raise _fail(source, f"{key}.deploy", "expected the command that redeploys this service")
    return ServiceSources(str(name), tuple(sources), provider, deploy)


def _fail(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {message}")


def parse_drift(table: Mapping[str, Any], source: str, base: Path) -> DriftConfig:
    """Validate a ``[drift]`` table; relative ``repo`` paths are relative to ``base``."""
    allowed = {
        "repo",
        "stale_hours",
        "provider",
        "region",
        "project",
        "sha_label",
        "services",
        "concurrency",
        "timeout",
        "issue_label",
    }
    for key in table:
        if key not in allowed:
            raise _fail(
                source,
                f"drift.{key}",
                f"unknown key; expected one of: {', '.join(sorted(allowed))}",
            )
    provider = _check_provider(source, "drift.provider", table.get("provider", "gcloud-functions"))
    stale = table.get("stale_hours", 24)
    if not isinstance(stale, int | float) or isinstance(stale, bool) or stale < 0:
        raise _fail(source, "drift.stale_hours", f"expected a number of hours ≥ 0, got {stale!r}")
    raw_services = table.get("services")
    if not isinstance(raw_services, Mapping) or not raw_services:
        raise _fail(source, "drift.services", 'expected at least one [drift.services."NAME"] table')
    services = [_parse_service(source, str(name), spec) for name, spec in raw_services.items()]
    label = table.get("issue_label", DEFAULT_ISSUE_LABEL)
    if not isinstance(label, str) or not label.strip() or len(label) > 50:
        raise _fail(source, "drift.issue_label", "expected a GitHub label name (1-50 characters)")
    repo = Path(str(table.get("repo", ".")))
    for key in ("region", "project", "sha_label"):
        if key in table and not isinstance(table[key], str):
            raise _fail(source, f"drift.{key}", "expected a string")
    concurrency = table.get("concurrency", 8)
    if not isinstance(concurrency, int) or not 1 <= concurrency <= 64:
        raise _fail(source, "drift.concurrency", "expected a whole number from 1 to 64")
    return DriftConfig(
        services=tuple(services),
        repo=repo if repo.is_absolute() else (base / repo),
        stale_hours=float(stale),
        provider=provider,
        region=table.get("region"),
        project=table.get("project"),
        sha_label=table.get("sha_label", "commit-sha"),
        concurrency=concurrency,
        timeout=float(table.get("timeout", 60)),
        issue_label=label,
        base=base,
    )


def load_drift(path: str | os.PathLike[str]) -> DriftConfig:
    """Read the ``[drift]`` table of ``path`` (its own file or the pipeline file)."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    table = data.get("drift")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{file}: no [drift] table")
    return parse_drift(table, str(file), file.resolve().parent)
