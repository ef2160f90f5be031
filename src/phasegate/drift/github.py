"""Keep one open GitHub issue in step with the drift report: create, update, close."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from phasegate.drift.core import DriftReport
from phasegate.drift.report import to_markdown
from phasegate.errors import ConfigError, PhasegateError
from phasegate.redact import SCRUBBER

LABEL = "deployment-drift"
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
    ) -> None:
        if "/" not in repository:
            raise ConfigError(f"GITHUB_REPOSITORY must be OWNER/NAME, got {repository!r}")
        SCRUBBER.add(token)
        self.repository = repository
        self.api = api.rstrip("/")
        self._client = client or httpx.Client(timeout=30)
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "phasegate-drift",
        }

    @classmethod
    def from_environment(cls) -> GitHubIssues:
        """From ``GITHUB_TOKEN``, ``GITHUB_REPOSITORY`` and (for Enterprise) ``GITHUB_API_URL``."""
        token = os.environ.get("GITHUB_TOKEN")
        repository = os.environ.get("GITHUB_REPOSITORY")
        if not token or not repository:
            raise ConfigError(
                "--github-issue needs GITHUB_TOKEN and GITHUB_REPOSITORY in the environment"
            )
        return cls(
            repository, token, api=os.environ.get("GITHUB_API_URL", "https://api.github.com")
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

    def find_open(self) -> dict[str, Any] | None:
        """The open issue carrying the label and the hidden marker (following pagination)."""
        url: str | None = f"{self.api}/repos/{self.repository}/issues"
        params: dict[str, Any] | None = {"state": "open", "labels": LABEL, "per_page": 100}
        while url:
            response = self._request("GET", url, params=params)
            for issue in response.json():
                if "pull_request" not in issue and MARKER in (issue.get("body") or ""):
                    return dict(issue)
            url = response.links.get("next", {}).get("url")
            params = None
        return None

    def upsert(self, report: DriftReport) -> IssueOutcome:
        """Create or update the issue while something is stale; close it when nothing is."""
        existing = self.find_open()
        stale = report.stale
        if not stale:
            if existing is None:
                return IssueOutcome("none")
            number = existing["number"]
            self._request(
                "POST",
                f"{self.api}/repos/{self.repository}/issues/{number}/comments",
                json={"body": "No stale deployments any more; closing. " + MARKER},
            )
            self._request(
                "PATCH",
                f"{self.api}/repos/{self.repository}/issues/{number}",
                json={"state": "closed", "state_reason": "completed"},
            )
            return IssueOutcome("closed", number, existing.get("html_url"))
        body = issue_body(report)
        if existing is None:
            created = self._request(
                "POST",
                f"{self.api}/repos/{self.repository}/issues",
                json={"title": TITLE, "body": body, "labels": [LABEL]},
            ).json()
            return IssueOutcome("created", created.get("number"), created.get("html_url"))
        number = existing["number"]
        self._request(
            "PATCH",
            f"{self.api}/repos/{self.repository}/issues/{number}",
            json={"title": TITLE, "body": body},
        )
        return IssueOutcome("updated", number, existing.get("html_url"))


def issue_body(report: DriftReport) -> str:
    """The issue body: marker, checklist of stale services, full report; ≤ 65,536 chars."""
    budget = BODY_LIMIT // 2
    items: list[str] = []
    used = 0
    stale = report.stale
    for index, service in enumerate(stale):
        line = f"- [ ] `{service.name}` — {service.behind_hours or 0:.1f} h behind" + (
            f", {service.commits_behind} commit(s)" if service.commits_behind is not None else ""
        )
        if used + len(line) + 1 > budget:
            items.append(f"- … and {len(stale) - index} more (see the report)")
            break
        items.append(line)
        used += len(line) + 1
    head = (
        f"{MARKER}\n### Stale services\n\n" + "\n".join(items) + "\n\n"
        "Redeploy these, then the next check closes this issue.\n\n"
    )
    return head + to_markdown(report, verbose=True, limit=BODY_LIMIT - len(head))
