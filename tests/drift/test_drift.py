"""Drift against real git repositories: every status, SHA and time modes, auto: sources, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gitrepo import NOW, Repo, hours_ago

from phasegate.cli import main
from phasegate.drift import DriftStatus, check_drift, load_drift, open_provider
from phasegate.drift.report import to_markdown, to_text
from phasegate.testing import FakeClock

CONFIG = """
[drift]
repo = "repo"
stale_hours = 24
provider = "manifest:deploys.json"

[drift.services."fresh"]
sources = ["functions/fresh"]

[drift.services."slightly-behind"]
sources = ["functions/minor", "shared"]

[drift.services."way-behind"]
sources = ["functions/stale"]

[drift.services."ghost"]
sources = ["functions/ghost"]
"""


def build(tmp_path: Path) -> tuple[Repo, dict[str, str]]:
    repo = Repo(tmp_path / "repo")
    shas = {
        "base": repo.commit(
            {
                "functions/fresh/main.py": "x = 1\n",
                "functions/minor/main.py": "x = 1\n",
                "functions/stale/main.py": "x = 1\n",
                "functions/ghost/main.py": "x = 1\n",
                "shared/util.py": "u = 1\n",
                "README.md": "r\n",
            },
            "initial",
            hours_ago(100),
        )
    }
    shas["stale-change"] = repo.commit(
        {"functions/stale/main.py": "x = 2\n"}, "fix stale bug", hours_ago(50)
    )
    shas["shared-change"] = repo.commit({"shared/util.py": "u = 2\n"}, "tweak shared", hours_ago(5))
    shas["readme"] = repo.commit({"README.md": "r2\n"}, "docs only", hours_ago(1))
    return repo, shas


def manifest(tmp_path: Path, services: dict[str, dict[str, str]]) -> None:
    (tmp_path / "deploys.json").write_text(json.dumps({"services": services}))


def run(tmp_path: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    config = load_drift(tmp_path / "drift.toml")
    provider = open_provider(config.provider, cwd=tmp_path)
    return check_drift(config, provider, clock=FakeClock(NOW), **kwargs)  # type: ignore[arg-type]


def statuses(report) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {s.name: s.status.value for s in report.services}


def test_time_based_drift_gives_every_status(tmp_path: Path) -> None:
    """Without SHAs: ok, minor (5 h), stale (≥ 24 h), unknown (not deployed)."""
    build(tmp_path)
    (tmp_path / "drift.toml").write_text(CONFIG)
    manifest(
        tmp_path,
        {
            "fresh": {"deployed_at": "2026-01-28T10:00:00Z"},
            "slightly-behind": {"deployed_at": hours_ago(10).isoformat()},
            "way-behind": {"deployed_at": hours_ago(90).isoformat()},
        },
    )
    report = run(tmp_path)
    assert statuses(report) == {
        "fresh": "ok",
        "slightly-behind": "minor",
        "way-behind": "stale",
        "ghost": "unknown",
    }
    by_name = {s.name: s for s in report.services}
    assert by_name["slightly-behind"].behind_hours == pytest.approx(5.0)
    assert by_name["slightly-behind"].commits_behind is None
    assert by_name["way-behind"].behind_hours == pytest.approx(40.0)
    assert [c.subject for c in by_name["way-behind"].recent_commits] == ["fix stale bug"]
    assert by_name["ghost"].error == "not in the manifest"
    assert report.summary() == {"checked": 4, "ok": 1, "minor": 1, "stale": 1, "unknown": 1}
    assert statuses(run(tmp_path, stale_hours=48))["way-behind"] == "minor"


def test_sha_based_drift_counts_exactly_the_commits_touching_the_sources(tmp_path: Path) -> None:
    """With a deployed SHA: commits after it on the service's paths, other paths ignored."""
    _, shas = build(tmp_path)
    (tmp_path / "drift.toml").write_text(CONFIG)
    manifest(
        tmp_path,
        {
            "fresh": {"deployed_at": hours_ago(100).isoformat(), "commit": shas["base"][:10]},
            "slightly-behind": {"deployed_at": hours_ago(99).isoformat(), "commit": shas["base"]},
            "way-behind": {"deployed_at": hours_ago(99).isoformat(), "commit": shas["base"]},
            "ghost": {"commit": shas["readme"]},
        },
    )
    by_name = {s.name: s for s in run(tmp_path).services}
    assert (by_name["fresh"].status, by_name["fresh"].commits_behind) == (DriftStatus.OK, 0)
    assert (by_name["slightly-behind"].status, by_name["slightly-behind"].commits_behind) == (
        DriftStatus.STALE,
        1,
    )
    assert by_name["slightly-behind"].behind_hours == pytest.approx(94.0)
    assert (by_name["way-behind"].status, by_name["way-behind"].commits_behind) == (
        DriftStatus.STALE,
        1,
    )
    assert (by_name["ghost"].status, by_name["ghost"].commits_behind) == (DriftStatus.OK, 0)
    assert by_name["ghost"].deployed_at == hours_ago(1)  # taken from the commit


def test_an_unknown_sha_or_one_off_the_branch_is_reported(tmp_path: Path) -> None:
    """A SHA git does not know, or not an ancestor of HEAD, makes the service unknown with why."""
    repo, _ = build(tmp_path)
    repo.git("checkout", "-q", "-b", "experiment")
    side = repo.commit({"functions/fresh/main.py": "x = 99\n"}, "experiment", hours_ago(2))
    repo.git("checkout", "-q", "main")
    (tmp_path / "drift.toml").write_text(CONFIG)
    manifest(
        tmp_path,
        {
            "fresh": {"deployed_at": hours_ago(2).isoformat(), "commit": side},
            "slightly-behind": {"deployed_at": hours_ago(2).isoformat(), "commit": "deadbeefcafe"},
            "way-behind": {"deployed_at": hours_ago(1).isoformat()},
            "ghost": {"deployed_at": "yesterday"},
        },
    )
    by_name = {s.name: s for s in run(tmp_path).services}
    assert by_name["fresh"].status is DriftStatus.UNKNOWN
    assert "not an ancestor of HEAD" in (by_name["fresh"].error or "")
    assert by_name["slightly-behind"].status is DriftStatus.UNKNOWN
    assert "deadbeefcafe is not known to git" in (by_name["slightly-behind"].error or "")
    assert by_name["way-behind"].status is DriftStatus.OK
    assert "bad deployed_at" in (by_name["ghost"].error or "")


def test_a_command_provider_failing_for_one_service_leaves_the_others(tmp_path: Path) -> None:
    """command: prints the manifest; a service it omits is unknown, the rest are judged."""
    build(tmp_path)
    script = tmp_path / "deploys.sh"
    script.write_text(
        "#!/bin/sh\n"
        'echo \'{"services": {"fresh": {"deployed_at": "2026-01-28T11:00:00Z"}, "way-behind": {"deployed_at": "2026-01-28T11:00:00Z"}}}\'\n'
    )
    script.chmod(0o755)
    (tmp_path / "drift.toml").write_text(
        CONFIG.replace("manifest:deploys.json", "command:./deploys.sh")
    )
    assert statuses(run(tmp_path)) == {
        "fresh": "ok",
        "slightly-behind": "unknown",
        "way-behind": "ok",
        "ghost": "unknown",
    }


def test_auto_sources_follow_local_imports_only(tmp_path: Path) -> None:
    """auto:main.py covers its folder and the local modules it imports, not all of shared/."""
    repo = Repo(tmp_path / "repo")
    repo.commit(
        {
            "functions/p2/main.py": "from shared.storage import save\nimport json\nfrom . import helper\n",
            "functions/p2/helper.py": "X = 1\n",
            "shared/__init__.py": "",
            "shared/storage.py": "from shared.retry import backoff\n\ndef save():\n    return backoff\n",
            "shared/retry.py": "backoff = 1\n",
            "shared/unrelated.py": "y = 1\n",
        },
        "initial",
        hours_ago(100),
    )
    repo.commit({"shared/unrelated.py": "y = 2\n"}, "unrelated change", hours_ago(30))
    (tmp_path / "drift.toml").write_text(
        '[drift]\nrepo = "repo"\nprovider = "manifest:deploys.json"\n'
        '[drift.services."p2"]\nsources = ["auto:functions/p2/main.py"]\n'
        '[drift.services."p2-folder"]\nsources = ["functions/p2", "shared"]\n'
    )
    manifest(
        tmp_path,
        {
            "p2": {"deployed_at": hours_ago(90).isoformat()},
            "p2-folder": {"deployed_at": hours_ago(90).isoformat()},
        },
    )
    report = run(tmp_path)
    assert statuses(report) == {"p2": "ok", "p2-folder": "stale"}
    assert report.sources["p2"] == (
        "functions/p2",
        "shared/__init__.py",
        "shared/retry.py",
        "shared/storage.py",
    )
    repo.commit({"shared/retry.py": "backoff = 2\n"}, "retry fix", hours_ago(20))
    assert statuses(run(tmp_path))["p2"] == "stale"


def test_the_command_exit_codes_and_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 when stale, 0 when not, 2 for a bad config or no git; text, JSON and Markdown."""
    build(tmp_path)
    config = tmp_path / "drift.toml"
    config.write_text(CONFIG)
    manifest(
        tmp_path,
        {
            "fresh": {"deployed_at": hours_ago(0.5).isoformat()},
            "slightly-behind": {"deployed_at": hours_ago(0.5).isoformat()},
            "way-behind": {"deployed_at": hours_ago(90).isoformat()},
            "ghost": {"deployed_at": hours_ago(0.5).isoformat()},
        },
    )
    assert main(["drift", "--config", str(config), "--verbose"]) == 1
    out = capsys.readouterr().out
    assert "❌ way-behind: STALE" in out
    assert "✅ fresh: OK — up to date" in out
    assert "git log --oneline --since=" in out
    assert "fix stale bug" in out
    assert "Services checked: 4, with drift: 1" in out
    assert main(["drift", "--config", str(config), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"checked_at", "repo", "services", "summary"}
    assert set(data["services"][0]) == {
        "name",
        "status",
        "deployed_at",
        "deployed_commit",
        "source_changed_at",
        "behind_hours",
        "commits_behind",
        "recent_commits",
        "error",
        "deploy",
    }
    assert data["summary"] == {"checked": 4, "ok": 3, "minor": 0, "stale": 1, "unknown": 0}
    assert main(["drift", "--config", str(config), "--format", "markdown"]) == 1
    assert "| ❌ | `way-behind` | stale |" in capsys.readouterr().out
    assert main(["drift", "--config", str(config), "--stale-hours", "100"]) == 0
    capsys.readouterr()
    config.write_text(CONFIG.replace('repo = "repo"', 'repo = "nowhere"'))
    (tmp_path / "nowhere").mkdir()
    assert main(["drift", "--config", str(config)]) == 2
    assert "not a git repository" in capsys.readouterr().err
    config.write_text(CONFIG.replace('provider = "manifest:deploys.json"', 'provider = "ouija"'))
    assert main(["drift", "--config", str(config)]) == 2
    assert "drift.provider" in capsys.readouterr().err


def test_text_report_colours_only_when_asked(tmp_path: Path) -> None:
    """ANSI colours appear with colour=True and never in Markdown."""
    build(tmp_path)
    (tmp_path / "drift.toml").write_text(CONFIG)
    manifest(tmp_path, {"way-behind": {"deployed_at": hours_ago(90).isoformat()}})
    report = run(tmp_path)
    assert "\033[31mSTALE" in to_text(report, colour=True)
    assert "\033[" not in to_text(report) + to_markdown(report)
