"""Where deployment facts come from: gcloud (Cloud Functions 2nd gen, Cloud Run), a JSON
manifest, or any command printing that manifest. One service failing makes only that
service ``unknown``."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from phasegate.errors import ConfigError
from phasegate.redact import SCRUBBER


@dataclass(frozen=True, slots=True)
class Deployment:
    """What a provider knows about one deployed service."""

    name: str
    deployed_at: datetime | None = None
    commit: str | None = None
    error: str | None = None


class DeploymentProvider(Protocol):
    """Tells when (and from which commit) each service was deployed."""

    def describe(self, names: Sequence[str]) -> dict[str, Deployment]:
        """A deployment (or an error) for every name."""
        ...


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 / ISO 8601 timestamp as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if "." in text:
        # Python 3.11 accepts at most 6 fractional digits; Google returns 9.
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _from_manifest_entry(name: str, entry: object) -> Deployment:
    if not isinstance(entry, Mapping):
        return Deployment(name, error="not in the manifest")
    try:
        deployed_at = parse_time(entry.get("deployed_at"))
    except ValueError:
        return Deployment(name, error=f"bad deployed_at {entry.get('deployed_at')!r}")
    commit = entry.get("commit")
    return Deployment(name, deployed_at, str(commit) if commit else None)


def _from_manifest(names: Sequence[str], data: object, origin: str) -> dict[str, Deployment]:
    services = data.get("services") if isinstance(data, Mapping) else None
    if not isinstance(services, Mapping):
        raise ConfigError(
            f'{origin}: expected {{"services": {{"NAME": {{"deployed_at", "commit"}}}}}}'
        )
    return {name: _from_manifest_entry(name, services.get(name)) for name in names}


class ManifestProvider:
    """``manifest:deploys.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self, names: Sequence[str]) -> dict[str, Deployment]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"manifest {self.path} not found") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"manifest {self.path} is not valid JSON: {exc}") from exc
        return _from_manifest(names, data, str(self.path))


class CommandProvider:
    """``command:./print-deploys.sh``: a program printing the manifest JSON."""

    def __init__(self, command: str, *, cwd: Path, timeout: float = 60.0) -> None:
        self.command = command
        self.cwd = cwd
        self.timeout = timeout

    def describe(self, names: Sequence[str]) -> dict[str, Deployment]:
        try:
            result = subprocess.run(
                shlex.split(self.command),
                cwd=self.cwd,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"command {self.command!r} could not run: {exc}") from exc
        if result.returncode != 0:
            raise ConfigError(
                f"command {self.command!r} exited {result.returncode}: "
                f"{SCRUBBER.scrub(result.stderr.strip())[:300]}"
            )
        try:
            data = json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"command {self.command!r} did not print JSON: {exc}") from exc
        return _from_manifest(names, data, f"command {self.command!r}")


class _GcloudProvider:
    """Runs ``gcloud ... describe NAME --format=json`` for each service, concurrently."""

    surface: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        project: str | None,
        region: str | None,
        sha_label: str,
        gcloud: str = "gcloud",
        concurrency: int = 8,
        timeout: float = 60.0,
    ) -> None:
        self.project = project
        self.region = region
        self.sha_label = sha_label
        self.gcloud = gcloud
        self.concurrency = concurrency
        self.timeout = timeout

    def _command(self, name: str) -> list[str]:
        command = [self.gcloud, *self.surface, "describe", name, "--format=json"]
        if self.region:
            command.append(f"--region={self.region}")
        if self.project:
            command.append(f"--project={self.project}")
        return command

    def _one(self, name: str) -> Deployment:
        try:
            result = subprocess.run(
                self._command(name),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            return Deployment(name, error=f"{self.gcloud} not found; install the Google Cloud CLI")
        except subprocess.TimeoutExpired:
            return Deployment(name, error=f"gcloud timed out after {self.timeout:.0f}s")
        if result.returncode != 0:
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
            message = lines[0] if lines else f"exit {result.returncode}"
            return Deployment(name, error=SCRUBBER.scrub(message)[:300])
        try:
            return self.parse(name, json.loads(result.stdout))
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            return Deployment(name, error=f"unreadable gcloud output: {exc}")

    def parse(self, name: str, data: Any) -> Deployment:
        raise NotImplementedError

    def describe(self, names: Sequence[str]) -> dict[str, Deployment]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return dict(zip(names, pool.map(self._one, names), strict=True))


class CloudFunctionsProvider(_GcloudProvider):
    """``gcloud functions describe`` (2nd gen): ``updateTime`` and the SHA label."""

    surface = ("functions",)

    def _command(self, name: str) -> list[str]:
        return [*super()._command(name), "--gen2"]

    def parse(self, name: str, data: Any) -> Deployment:
        labels = data.get("labels") or {}
        commit = labels.get(self.sha_label) or (data.get("buildConfig") or {}).get(
            "environmentVariables", {}
        ).get(self.sha_label.upper().replace("-", "_"))
        return Deployment(name, parse_time(data.get("updateTime")), commit or None)


class CloudRunProvider(_GcloudProvider):
    """``gcloud run services describe``: the Ready condition's time, a SHA label/annotation."""

    surface = ("run", "services")

    def parse(self, name: str, data: Any) -> Deployment:
        metadata = data.get("metadata") or {}
        template = ((data.get("spec") or {}).get("template") or {}).get("metadata") or {}
        commit = None
        for bag in (
            template.get("labels"),
            template.get("annotations"),
            metadata.get("labels"),
            metadata.get("annotations"),
        ):
            if isinstance(bag, Mapping) and bag.get(self.sha_label):
                commit = str(bag[self.sha_label])
                break
        deployed = None
        for condition in (data.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready":
                deployed = parse_time(condition.get("lastTransitionTime"))
        deployed = (
            deployed
            or parse_time(data.get("updateTime"))
            or parse_time(metadata.get("creationTimestamp"))
        )
        return Deployment(name, deployed, commit)


def open_provider(
    spec: str,
    *,
    cwd: Path,
    project: str | None = None,
    region: str | None = None,
    sha_label: str = "commit-sha",
    concurrency: int = 8,
    timeout: float = 60.0,
) -> DeploymentProvider:
    """The provider named by ``spec``."""
    if spec == "gcloud-functions":
        return CloudFunctionsProvider(
            project=project,
            region=region,
            sha_label=sha_label,
            concurrency=concurrency,
            timeout=timeout,
        )
    if spec == "cloud-run":
        return CloudRunProvider(
            project=project,
            region=region,
            sha_label=sha_label,
            concurrency=concurrency,
            timeout=timeout,
        )
    if spec.startswith("manifest:"):
        path = Path(spec.removeprefix("manifest:"))
        return ManifestProvider(path if path.is_absolute() else cwd / path)
    if spec.startswith("command:"):
        return CommandProvider(spec.removeprefix("command:"), cwd=cwd, timeout=timeout)
    raise ConfigError(
        f"unknown provider {spec!r}; expected gcloud-functions, cloud-run, "
        "manifest:FILE or command:PROGRAM"
    )
