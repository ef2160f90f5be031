"""Cloud Functions and Cloud Run services in one drift file, a configurable issue label, and
each service's ``deploy`` command listed under "Resolution" with the workflow run's link."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from gitrepo import NOW, Repo, hours_ago
from test_github import FakeGitHub
from test_providers import RUN_SERVICE, stand_in_gcloud

from phasegate.cli import main
from phasegate.drift import check_drift, load_drift, open_provider
from phasegate.drift.github import MARKER, GitHubIssues, issue_body, workflow_run_url
from phasegate.errors import ConfigError
from phasegate.testing import FakeClock

FUNCTION_DEPLOY = (
    "gcloud functions deploy phase2-to-phase3 --gen2 --region=us-west2 "
    "--source=functions/phase2 --trigger-topic=phase2-completions"
)
RUN_DEPLOY = "gcloud run deploy phasegate-api --region=us-west2 --source=service"
CONFIG = f"""
[drift]
repo = "repo"
provider = "gcloud-functions"
project = "my-project"
region = "us-west2"
issue_label = "cloud-function-drift"

[drift.services."phase2-to-phase3"]
sources = ["functions/phase2"]
deploy = "{FUNCTION_DEPLOY}"

[drift.services."phasegate-api"]
sources = ["service"]
provider = "cloud-run"
deploy = "{RUN_DEPLOY}"

[drift.services."phase3-to-phase4"]
sources = ["functions/phase3"]
"""
TOKEN = "ghp_testtoken0123456789abcdefghij"


def function(updated_hours_ago: float) -> dict[str, Any]:
    return {
        "name": "projects/my-project/locations/us-west2/functions/x",
        "environment": "GEN_2",
        "updateTime": hours_ago(updated_hours_ago).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "labels": {"deployment-tool": "cli-gcloud"},
    }


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository, the drift file, and a stand-in ``gcloud`` first on PATH."""
    repo = Repo(tmp_path / "repo")
    repo.commit(
        {
            "functions/phase2/main.py": "a\n",
            "functions/phase3/main.py": "a\n",
            "service/app.py": "a\n",
        },
        "initial",
        hours_ago(100),
    )
    repo.commit({"functions/phase2/main.py": "b\n"}, "fix phase 2", hours_ago(50))
    repo.commit({"functions/phase3/main.py": "b\n"}, "fix phase 3", hours_ago(60))
    service = json.loads(json.dumps(RUN_SERVICE))
    service["spec"]["template"]["metadata"]["annotations"].pop("commit-sha")
    service["status"]["conditions"][0]["lastTransitionTime"] = hours_ago(2).isoformat()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in_gcloud(
        bin_dir,
        {
            "phase2-to-phase3": function(updated_hours_ago=80),
            "phase3-to-phase4": function(updated_hours_ago=90),
            "phasegate-api": service,
        },
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    (tmp_path / "drift.toml").write_text(CONFIG)
    return tmp_path


def test_functions_and_cloud_run_services_are_checked_by_their_own_provider(
    project: Path,
) -> None:
    """Each service is described through its provider's gcloud surface, in one report."""
    config = load_drift(project / "drift.toml")
    provider = open_provider(config.provider, cwd=project, project="my-project", region="us-west2")
    report = check_drift(config, provider, clock=FakeClock(NOW))
    assert {s.name: s.status.value for s in report.services} == {
        "phase2-to-phase3": "stale",
        "phasegate-api": "ok",
        "phase3-to-phase4": "stale",
    }
    calls = (project / "bin" / "calls.log").read_text().splitlines()
    assert any(c.startswith("functions describe phase2-to-phase3") and "--gen2" in c for c in calls)
    assert any(c.startswith("run services describe phasegate-api") for c in calls)
    assert not any(c.startswith("functions describe phasegate-api") for c in calls)
    assert report.issue_label == "cloud-function-drift"
    deploys = {s.name: s.deploy for s in report.services}
    assert deploys == {
        "phase2-to-phase3": FUNCTION_DEPLOY,
        "phasegate-api": RUN_DEPLOY,
        "phase3-to-phase4": None,
    }


def test_the_issue_lists_deploy_commands_under_resolution_with_the_run_link(
    project: Path,
) -> None:
    """Resolution names each stale service's deploy command (or says none is configured)."""
    config = load_drift(project / "drift.toml")
    report = check_drift(config, open_provider(config.provider, cwd=project), clock=FakeClock(NOW))
    run = "https://github.com/acme/pipeline/actions/runs/42"
    body = issue_body(report, run_url=run)
    assert body.startswith(MARKER)
    resolution = body[body.index("### Resolution") : body.index("## Deployment drift")]
    assert FUNCTION_DEPLOY in resolution
    assert RUN_DEPLOY not in resolution  # up to date: nothing to resolve
    assert "`phase3-to-phase4`: no `deploy` command is configured" in resolution
    assert f"[this workflow run]({run})" in resolution


def test_the_drift_command_files_the_issue_under_the_configured_label(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`phasegate drift --github-issue` labels the issue from [drift] issue_label and links
    the run from GITHUB_SERVER_URL/GITHUB_REPOSITORY/GITHUB_RUN_ID."""
    with FakeGitHub() as github:
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("GITHUB_REPOSITORY", "acme/pipeline")
        monkeypatch.setenv("GITHUB_API_URL", github.url)
        monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.example")
        monkeypatch.setenv("GITHUB_RUN_ID", "4242")
        code = main(["drift", "--config", str(project / "drift.toml"), "--github-issue"])
        assert code == 1
        [issue] = github.issues
        assert issue["labels"] == ["cloud-function-drift"]
        assert "https://github.example/acme/pipeline/actions/runs/4242" in issue["body"]
        assert FUNCTION_DEPLOY in issue["body"]
        out = capsys.readouterr().out
        assert f"deploy: {FUNCTION_DEPLOY}" in out
        finds = [p for m, p, _ in github.requests if m == "GET"]
        assert all("labels=cloud-function-drift" in p for p in finds)


def test_an_explicit_label_wins_over_the_reports(project: Path) -> None:
    """GitHubIssues(label=...) overrides [drift] issue_label (the default stays deployment-drift)."""
    config = load_drift(project / "drift.toml")
    report = check_drift(config, open_provider(config.provider, cwd=project), clock=FakeClock(NOW))
    with FakeGitHub() as github:
        client = GitHubIssues("acme/pipeline", TOKEN, api=github.url, label="ops-drift")
        assert client.upsert(report).action == "created"
        assert github.issues[0]["labels"] == ["ops-drift"]


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        (
            {"GITHUB_REPOSITORY": "acme/p", "GITHUB_RUN_ID": "7"},
            "https://github.com/acme/p/actions/runs/7",
        ),
        (
            {
                "GITHUB_SERVER_URL": "https://ghe.example/",
                "GITHUB_REPOSITORY": "a/b",
                "GITHUB_RUN_ID": "1",
            },
            "https://ghe.example/a/b/actions/runs/1",
        ),
        ({"GITHUB_REPOSITORY": "acme/p"}, None),
    ],
)
def test_the_workflow_run_link_comes_from_the_actions_environment(
    environ: dict[str, str], url: str | None
) -> None:
    """The run link needs the repository and the run id; the server defaults to github.com."""
    assert workflow_run_url(environ) == url


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ('sources = ["a"]\nprovider = "azure"', r'services\."s"\.provider'),
        ('sources = ["a"]\ndeploy = ""', r'services\."s"\.deploy'),
        ('sources = ["a"]\ndeploy = 3', r'services\."s"\.deploy'),
        ('sources = ["a"]\ncolour = "red"', "expected one of: deploy, provider, sources"),
    ],
)
def test_per_service_settings_are_validated(tmp_path: Path, service: str, message: str) -> None:
    """A bad per-service provider or deploy command is a ConfigError naming the key."""
    (tmp_path / "drift.toml").write_text(f'[drift]\n[drift.services."s"]\n{service}\n')
    with pytest.raises(ConfigError, match=message):
        load_drift(tmp_path / "drift.toml")


@pytest.mark.parametrize("label", ['""', "3", '"' + "x" * 51 + '"'])
def test_a_bad_issue_label_is_refused(tmp_path: Path, label: str) -> None:
    """issue_label must be a GitHub label name."""
    (tmp_path / "drift.toml").write_text(
        f'[drift]\nissue_label = {label}\n[drift.services."s"]\nsources = ["a"]\n'
    )
    with pytest.raises(ConfigError, match=r"drift\.issue_label"):
        load_drift(tmp_path / "drift.toml")


def test_the_default_label_stays_deployment_drift(tmp_path: Path) -> None:
    """Without issue_label the issue keeps today's label."""
    (tmp_path / "drift.toml").write_text('[drift]\n[drift.services."s"]\nsources = ["a"]\n')
    assert load_drift(tmp_path / "drift.toml").issue_label == "deployment-drift"
