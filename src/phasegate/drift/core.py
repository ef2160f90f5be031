"""Compare what is deployed with what is in git: one status per service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from phasegate.clock import SYSTEM_CLOCK, Clock, utc_iso
from phasegate.drift.config import DEFAULT_ISSUE_LABEL, DriftConfig, ServiceSources
from phasegate.drift.git import Commit, GitRepo, auto_sources
from phasegate.drift.providers import Deployment, DeploymentProvider, open_provider


class DriftStatus(StrEnum):
    """``ok`` (nothing behind), ``minor`` (behind ≤ threshold), ``stale``, ``unknown``."""

    OK = "ok"
    MINOR = "minor"
    STALE = "stale"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ServiceDrift:
    """How far one service is behind its sources."""

    name: str
    status: DriftStatus
    sources: tuple[str, ...]
    deployed_at: datetime | None = None
    deployed_commit: str | None = None
    source_changed_at: datetime | None = None
    behind_hours: float | None = None
    commits_behind: int | None = None
    recent_commits: tuple[Commit, ...] = ()
    error: str | None = None
    deploy: str | None = None

    def to_dict(self, verbose: bool = True) -> dict[str, Any]:
        """The JSON form of one service."""
        return {
            "name": self.name,
            "status": self.status.value,
            "deployed_at": utc_iso(self.deployed_at) if self.deployed_at else None,
            "deployed_commit": self.deployed_commit,
            "source_changed_at": utc_iso(self.source_changed_at)
            if self.source_changed_at
            else None,
            "behind_hours": None if self.behind_hours is None else round(self.behind_hours, 2),
            "commits_behind": self.commits_behind,
            "recent_commits": [
                {"sha": c.sha, "date": utc_iso(c.date), "subject": c.subject}
                for c in (self.recent_commits if verbose else ())
            ],
            "error": self.error,
            "deploy": self.deploy,
        }


@dataclass(frozen=True, slots=True)
class DriftReport:
    """Every service's drift, checked at one moment against one repository."""

    checked_at: datetime
    repo: str
    services: tuple[ServiceDrift, ...]
    stale_hours: float
    sources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    issue_label: str = DEFAULT_ISSUE_LABEL

    def summary(self) -> dict[str, int]:
        """Counts per status."""
        counts = {"checked": len(self.services)}
        for status in DriftStatus:
            counts[status.value] = sum(1 for s in self.services if s.status is status)
        return counts

    @property
    def stale(self) -> list[ServiceDrift]:
        """The services behind more than the threshold."""
        return [s for s in self.services if s.status is DriftStatus.STALE]

    def to_dict(self, verbose: bool = True) -> dict[str, Any]:
        """The JSON document of ``--format json``."""
        return {
            "checked_at": utc_iso(self.checked_at),
            "repo": self.repo,
            "services": [s.to_dict(verbose) for s in self.services],
            "summary": self.summary(),
        }


def _hours(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier).total_seconds() / 3600)


def check_drift(
    config: DriftConfig,
    provider: DeploymentProvider,
    *,
    clock: Clock = SYSTEM_CLOCK,
    stale_hours: float | None = None,
    recent: int = 5,
    providers: Mapping[str, DeploymentProvider] | None = None,
) -> DriftReport:
    """Compare every configured service's deployment with its sources' history.

    ``provider`` answers for the services without a ``provider`` of their own; the others
    are asked through ``providers[spec]``, else a provider opened from their spec.
    """
    threshold = config.stale_hours if stale_hours is None else stale_hours
    repo = GitRepo(config.repo)
    repo.history()
    resolved: dict[str, tuple[str, ...]] = {}
    for service in config.services:
        resolved[service.name] = _resolve_sources(repo, service)
    deployments = _describe_all(config, provider, providers or {})
    since_cache: dict[str, set[str]] = {}
    results = []
    for service in config.services:
        deployment = deployments.get(service.name) or Deployment(
            service.name, error="not reported by the provider"
        )
        results.append(
            _compare(
                repo,
                service.name,
                resolved[service.name],
                deployment,
                threshold,
                since_cache,
                recent,
            )
        )
    return DriftReport(
        checked_at=clock.now(),
        repo=str(repo.top),
        services=tuple(
            replace(result, deploy=service.deploy)
            for result, service in zip(results, config.services, strict=True)
        ),
        stale_hours=threshold,
        sources=resolved,
        issue_label=config.issue_label,
    )


def _describe_all(
    config: DriftConfig,
    default: DeploymentProvider,
    providers: Mapping[str, DeploymentProvider],
) -> dict[str, Deployment]:
    """Ask each provider about its own services (Cloud Functions and Cloud Run in one file)."""
    groups: dict[str | None, list[str]] = {}
    for service in config.services:
        spec = None if service.provider in (None, config.provider) else service.provider
        groups.setdefault(spec, []).append(service.name)
    deployments: dict[str, Deployment] = {}
    for spec, names in groups.items():
        if spec is None:
            chosen = default
        elif spec in providers:
            chosen = providers[spec]
        else:
            chosen = open_provider(
                spec,
                cwd=config.base,
                project=config.project,
                region=config.region,
                sha_label=config.sha_label,
                concurrency=config.concurrency,
                timeout=config.timeout,
            )
        deployments.update(chosen.describe(names))
    return deployments


def _resolve_sources(repo: GitRepo, service: ServiceSources) -> tuple[str, ...]:
    paths: list[str] = []
    for source in service.sources:
        if source.startswith("auto:"):
            paths.extend(auto_sources(repo, source.removeprefix("auto:")))
        else:
            paths.append(repo.repo_path(source))
    return tuple(dict.fromkeys(paths))


def _compare(
    repo: GitRepo,
    name: str,
    sources: tuple[str, ...],
    deployment: Deployment,
    threshold: float,
    since_cache: dict[str, set[str]],
    recent: int,
) -> ServiceDrift:
    touching = repo.touching(sources)
    changed_at = touching[0].date if touching else None

    def unknown(error: str, commit: str | None = None) -> ServiceDrift:
        return ServiceDrift(
            name,
            DriftStatus.UNKNOWN,
            sources,
            deployed_at=deployment.deployed_at,
            deployed_commit=commit,
            source_changed_at=changed_at,
            error=error,
        )

    if deployment.error is not None:
        return unknown(deployment.error)
    deployed_at = deployment.deployed_at
    commits_behind: int | None = None
    if deployment.commit:
        full = repo.resolve(deployment.commit)
        if full is None:
            return unknown(
                f"deployed commit {deployment.commit} is not known to git (fetch full history?)",
                deployment.commit,
            )
        if not repo.is_ancestor(full):
            return unknown(
                f"deployed commit {full[:12]} is not an ancestor of HEAD (another branch?)", full
            )
        if full not in since_cache:
            since_cache[full] = repo.since(full)
        behind = [c for c in touching if c.sha in since_cache[full]]
        commits_behind = len(behind)
        if deployed_at is None:
            deployed_at = next((c.date for c in repo.history() if c.sha == full), None)
    elif deployed_at is None:
        return unknown("the provider gave no deployment time or commit")
    else:
        behind = [c for c in touching if c.date > deployed_at]
    hours = _hours(behind[0].date, deployed_at) if behind and deployed_at is not None else 0.0
    if not behind:
        status = DriftStatus.OK
    elif hours > threshold:
        status = DriftStatus.STALE
    else:
        status = DriftStatus.MINOR
    return ServiceDrift(
        name,
        status,
        sources,
        deployed_at=deployed_at,
        deployed_commit=deployment.commit,
        source_changed_at=changed_at,
        behind_hours=hours,
        commits_behind=commits_behind,
        recent_commits=tuple(behind[:recent]),
    )
