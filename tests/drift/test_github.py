"""The GitHub issue upsert against a local server answering as the REST API documents."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from gitrepo import NOW, Repo, hours_ago

from phasegate.drift import check_drift, load_drift, open_provider
from phasegate.drift.github import BODY_LIMIT, LABEL, MARKER, GitHubIssues
from phasegate.testing import FakeClock


class FakeGitHub:
    """Issues in memory; lists two per page with a Link header, as GitHub paginates."""

    def __init__(self) -> None:
        self.issues: list[dict[str, Any]] = []
        self.comments: list[tuple[int, str]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                return

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else None

            def do_GET(self) -> None:
                owner.requests.append(("GET", self.path, dict(self.headers)))
                if self.headers.get("Authorization") != "Bearer ghp_testtoken0123456789abcdefghij":
                    self._send(401, {"message": "Bad credentials"})
                    return
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                page = int(query.get("page", ["1"])[0])
                label = query.get("labels", [LABEL])[0]
                matching = [
                    i for i in owner.issues if i["state"] == "open" and label in i["labels"]
                ]
                chunk = matching[(page - 1) * 2 : page * 2]
                headers = {}
                if page * 2 < len(matching):
                    headers["Link"] = (
                        f'<{owner.url}{parts.path}?state=open&labels={label}&page={page + 1}>; rel="next"'
                    )
                self._send(
                    200,
                    [dict(i, labels=[{"name": n} for n in i["labels"]]) for i in chunk],
                    headers,
                )

            def do_POST(self) -> None:
                body = self._body()
                owner.requests.append(("POST", self.path, dict(self.headers)))
                if self.path.endswith("/comments"):
                    number = int(self.path.split("/")[-2])
                    owner.comments.append((number, body["body"]))
                    self._send(201, {"id": len(owner.comments)})
                    return
                number = len(owner.issues) + 1
                issue = {
                    "number": number,
                    "title": body["title"],
                    "body": body["body"],
                    "labels": body["labels"],
                    "state": "open",
                    "html_url": f"https://github.invalid/issues/{number}",
                }
                owner.issues.append(issue)
                self._send(201, issue)

            def do_PATCH(self) -> None:
                body = self._body()
                owner.requests.append(("PATCH", self.path, dict(self.headers)))
                number = int(self.path.split("/")[-1])
                issue = next(i for i in owner.issues if i["number"] == number)
                issue.update(body)
                self._send(200, issue)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FakeGitHub:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def report_with(tmp_path: Path, deployed_hours_ago: float):  # type: ignore[no-untyped-def]
    repo = Repo(tmp_path / "repo")
    repo.commit({"fn/main.py": "x = 1\n"}, "initial", hours_ago(100))
    repo.commit({"fn/main.py": "x = 2\n"}, "fix", hours_ago(30))
    (tmp_path / "deploys.json").write_text(
        json.dumps({"services": {"fn": {"deployed_at": hours_ago(deployed_hours_ago).isoformat()}}})
    )
    (tmp_path / "drift.toml").write_text(
        '[drift]\nrepo = "repo"\nprovider = "manifest:deploys.json"\n[drift.services.fn]\nsources = ["fn"]\n'
    )
    config = load_drift(tmp_path / "drift.toml")
    return check_drift(config, open_provider(config.provider, cwd=tmp_path), clock=FakeClock(NOW))


def test_create_update_then_close_the_one_drift_issue(tmp_path: Path) -> None:
    """Stale → create; still stale → update the same issue (found past page 1); fixed → comment and close."""
    with FakeGitHub() as github:
        for number in range(1, 4):  # unrelated open issues with the label, no marker: page 1 and 2
            github.issues.append(
                {
                    "number": number,
                    "title": "other",
                    "body": "manual",
                    "labels": [LABEL],
                    "state": "open",
                    "html_url": "",
                }
            )
        client = GitHubIssues("acme/pipeline", "ghp_testtoken0123456789abcdefghij", api=github.url)
        stale = report_with(tmp_path / "a", deployed_hours_ago=90)
        created = client.upsert(stale)
        assert created.action == "created"
        issue = github.issues[-1]
        assert MARKER in issue["body"]
        assert "- [ ] `fn` — 60.0 h behind" in issue["body"]
        assert issue["labels"] == [LABEL]
        updated = client.upsert(stale)
        assert (updated.action, updated.number) == ("updated", created.number)
        assert len(github.issues) == 4
        pages = [p for m, p, _ in github.requests if m == "GET"]
        assert any("page=2" in p for p in pages)
        fixed = report_with(tmp_path / "b", deployed_hours_ago=1)
        closed = client.upsert(fixed)
        assert (closed.action, closed.number) == ("closed", created.number)
        assert github.issues[-1]["state"] == "closed"
        assert github.comments[0][0] == created.number
        assert client.upsert(fixed).action == "none"
        headers = github.requests[0][2]
        assert headers["Accept"] == "application/vnd.github+json"
        assert headers["X-GitHub-Api-Version"] == "2022-11-28"


def test_the_issue_body_stays_under_githubs_limit(tmp_path: Path) -> None:
    """A huge report is truncated so the body is at most 65,536 characters."""
    from phasegate.drift.core import DriftReport, DriftStatus, ServiceDrift
    from phasegate.drift.github import issue_body

    services = tuple(
        ServiceDrift(f"service-{i:04d}-" + "x" * 80, DriftStatus.STALE, ("a",), behind_hours=30.0)
        for i in range(2000)
    )
    body = issue_body(DriftReport(NOW, "/repo", services, 24.0))
    assert len(body) <= BODY_LIMIT
    assert body.startswith(MARKER)


def test_bad_credentials_are_a_clear_error_without_the_token(tmp_path: Path) -> None:
    """A 401 is reported with GitHub's message; the token never appears."""
    from phasegate.drift.github import GitHubError

    with FakeGitHub() as github:
        client = GitHubIssues("acme/pipeline", "ghp_wrongtoken0123456789abcdefghij", api=github.url)
        with pytest.raises(GitHubError, match="answered 401 Bad credentials") as info:
            client.upsert(report_with(tmp_path, deployed_hours_ago=90))
    assert "ghp_wrong" not in str(info.value)
