"""Keep one open GitHub issue in step with the drift report: create, update, close."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from phasegate.drift.config import DEFAULT_ISSUE_LABEL
from phasegate.drift.core import DriftReport, ServiceDrift
from phasegate.drift.report import to_markdown
from phasegate.errors import ConfigError, PhasegateError
from phasegate.redact import SCRUBBER

LABEL = DEFAULT_ISSUE_LABEL
MARKER = "<!-- phasegate:deployment-drift -->"
BODY_LIMIT = 65_536
TITLE = "Deployment drift: stale services"


class GitHubError(PhasegateError):
    """The GitHub API refused or failed a request."""


@dataclass(frozen=True, slots=True)
class IssueOutcome:
    """What the upsert did: ``created``, ``updated``, ``closed`` or ``none``."""

    action: str
    number: int | None = None
    url: str | None = None


class GitHubIssues:
    """The few Issues API calls drift needs (REST v3)."""

    def __init__(
        self,
        repository: str,
        token: str,
        *,
        api: str = "https://api.github.com",
        client: httpx.Client | None = None,
        label: str | None = None,
        run_url: str | None = None,
    ) -> None:
        if "/" not in repository:
            raise ConfigError(f"GITHUB_REPOSITORY must be OWNER/NAME, got {repository!r}")
        SCRUBBER.add(token)
        self.repository = repository
        self.label = label
        self.run_url = run_url
        self.api = api.rstrip("/")
        self._client = client or httpx.Client(timeout=30)
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "phasegate-drift",
        }

    @classmethod
    def from_environment(cls, label: str | None = None) -> GitHubIssues:
        """From ``GITHUB_TOKEN``, ``GITHUB_REPOSITORY``, (for Enterprise) ``GITHUB_API_URL``,
        and the workflow run's link from ``GITHUB_SERVER_URL`` and ``GITHUB_RUN_ID``."""
        token = os.environ.get("GITHUB_TOKEN")
        repository = os.environ.get("GITHUB_REPOSITORY")
        if not token or not repository:
            raise ConfigError(
                "--github-issue needs GITHUB_TOKEN and GITHUB_REPOSITORY in the environment"
            )
        return cls(
            repository,
            token,
            api=os.environ.get("GITHUB_API_URL", "https://api.github.com"),
            label=label,
            run_url=workflow_run_url(os.environ),
        )

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, url, headers=self._headers, **kwargs)
        except httpx.HTTPError as exc:
            raise GitHubError(f"GitHub API unreachable: {type(exc).__name__}") from None
        if response.status_code >= 400:
            message = (
                response.json().get("message", "")
                if response.headers.get("content-type", "").startswith("application/json")
                else ""
            )
            raise GitHubError(
                SCRUBBER.scrub(
                    f"GitHub API {method} {url.removeprefix(self.api)} answered "
                    f"{response.status_code} {message}".strip()
                )
            )
        return response

    def find_open(self, label: str = LABEL) -> dict[str, Any] | None:
        """The open issue carrying the label and the hidden marker (following pagination)."""
        url: str | None = f"{self.api}/repos/{self.repository}/issues"
        params: dict[str, Any] | None = {"state": "open", "labels": label, "per_page": 100}
        while url:
            response = self._request("GET", url, params=params)
            for issue in response.json():
                if "pull_request" not in issue and MARKER in (issue.get("body") or ""):
                    return dict(issue)
            url = response.links.get("next", {}).get("url")
            params = None
        return None

    def upsert(self, report: DriftReport) -> IssueOutcome:
        """Create or update the issue while something is stale; close it when nothing is.

        The label is this client's, else the report's (``[drift] issue_label``)."""
        label = self.label or report.issue_label
        existing = self.find_open(label)
        stale = report.stale
        if not stale:
            if existing is None:
                return IssueOutcome("none")
            number = existing["number"]
            self._request(
                "POST",
                f"{self.api}/repos/{self.repository}/issues/{number}/comments",
                json={
                    "body": "No stale deployments any more; closing."
                    + (f" ([workflow run]({self.run_url}))" if self.run_url else "")
                    + f" {MARKER}"
                },
            )
            self._request(
                "PATCH",
                f"{self.api}/repos/{self.repository}/issues/{number}",
                json={"state": "closed", "state_reason": "completed"},
            )
            return IssueOutcome("closed", number, existing.get("html_url"))
        body = issue_body(report, run_url=self.run_url)
        if existing is None:
            created = self._request(
                "POST",
                f"{self.api}/repos/{self.repository}/issues",
                json={"title": TITLE, "body": body, "labels": [label]},
            ).json()
            return IssueOutcome("created", created.get("number"), created.get("html_url"))
        number = existing["number"]
        self._request(
            "PATCH",
            f"{self.api}/repos/{self.repository}/issues/{number}",
            json={"title": TITLE, "body": body},
        )
        return IssueOutcome("updated", number, existing.get("html_url"))


def workflow_run_url(environ: Mapping[str, str]) -> str | None:
    """The link to the running GitHub Actions workflow run, when there is one."""
    server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repository, run_id = environ.get("GITHUB_REPOSITORY"), environ.get("GITHUB_RUN_ID")
    if not repository or not run_id:
        return None
    return f"{server}/{repository}/actions/runs/{run_id}"


def _checklist(stale: list[ServiceDrift], budget: int) -> list[str]:
    items: list[str] = []
    used = 0
    for index, service in enumerate(stale):
        line = f"- [ ] `{service.name}` — {service.behind_hours or 0:.1f} h behind" + (
            f", {service.commits_behind} commit(s)" if service.commits_behind is not None else ""
        )
        if used + len(line) + 1 > budget:
            items.append(f"- … and {len(stale) - index} more (see the report)")
            break
        items.append(line)
        used += len(line) + 1
    return items


def _resolution(stale: list[ServiceDrift], budget: int, run_url: str | None) -> str:
    lines = ["### Resolution", "", "Redeploy these, then the next check closes this issue."]
    used = 0
    for index, service in enumerate(stale):
        if service.deploy:
            entry = f"\n- `{service.name}`:\n\n  ```sh\n  {service.deploy.strip()}\n  ```"
        else:
            entry = f"\n- `{service.name}`: no `deploy` command is configured for it"
        if used + len(entry) > budget:
            lines.append(f"\n- … and {len(stale) - index} more")
            break
        lines.append(entry)
        used += len(entry)
    if run_url:
        lines += ["", f"Found by [this workflow run]({run_url})."]
    return "\n".join(lines) + "\n\n"


def issue_body(report: DriftReport, *, run_url: str | None = None) -> str:
    """The issue body: marker, checklist of stale services, how to resolve them (each
    service's ``deploy`` command, the workflow run), full report; ≤ 65,536 chars."""
    stale = report.stale
    items = _checklist(stale, BODY_LIMIT // 4)
    head = (
        f"{MARKER}\n### Stale services\n\n"
        + "\n".join(items)
        + "\n\n"
        + _resolution(stale, BODY_LIMIT // 4, run_url)
    )
    return head + to_markdown(report, verbose=True, limit=BODY_LIMIT - len(head))
