"""Drift speed: 50 services in a repository of 5,000 commits (target < 2 s), against the
floor of reading the history once with ``git log --name-only``.

Run: .venv/bin/python bench/bench_drift.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import median_seconds

from phasegate.drift import check_drift, load_drift, open_provider

SERVICES = 50
COMMITS = 5000


def build_repo(path: Path) -> None:
    """5,000 commits over 50 function folders and a shared folder, via git fast-import."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    lines: list[str] = []
    for index in range(COMMITS):
        folder = "shared" if index % 10 == 0 else f"functions/svc{index % SERVICES:02d}"
        content = f"value = {index}"
        message = f"change {index}"
        stamp = int((start + timedelta(minutes=30 * index)).timestamp())
        lines += [
            "commit refs/heads/main",
            f"mark :{index + 1}",
            f"committer Dev <dev@example.invalid> {stamp} +0000",
            f"data {len(message)}",
            message,
        ]
        if index:
            lines.append(f"from :{index}")
        lines += [f"M 644 inline {folder}/file{index % 7}.py", f"data {len(content)}", content]
    stream = "\n".join(lines) + "\n"
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=stream.encode(), check=True)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=path, check=True)


def write_config(root: Path, repo: Path) -> Path:
    services = {}
    sections = []
    head = subprocess.run(
        ["git", "rev-list", "--max-count=1", "--skip=400", "HEAD"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for index in range(SERVICES):
        name = f"svc{index:02d}"
        entry: dict[str, str] = {"deployed_at": "2025-03-15T00:00:00Z"}
        if index % 2:
            entry["commit"] = head
        services[name] = entry
        sections.append(f'[drift.services."{name}"]\nsources = ["functions/{name}", "shared"]\n')
    (root / "deploys.json").write_text(json.dumps({"services": services}))
    config = root / "drift.toml"
    config.write_text(
        f'[drift]\nrepo = "{repo}"\nprovider = "manifest:deploys.json"\n\n' + "\n".join(sections)
    )
    return config


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        repo = root / "repo"
        build_repo(repo)
        config_path = write_config(root, repo)

        def baseline() -> None:
            subprocess.run(
                ["git", "log", "--name-only", "--format=%H %cI %s", "HEAD"],
                cwd=repo,
                capture_output=True,
                check=True,
            )

        def drift() -> None:
            config = load_drift(config_path)
            report = check_drift(config, open_provider(config.provider, cwd=root))
            assert len(report.services) == SERVICES

        floor = median_seconds(baseline)
        checked = median_seconds(drift)
    print(
        f"drift of {SERVICES} services over {COMMITS} commits: median {checked * 1000:.0f} ms "
        f"(git log alone {floor * 1000:.0f} ms, ratio {checked / floor:.1f}x; target < 2000 ms)"
    )
    return {"drift_s": checked, "git_log_s": floor, "ratio": checked / floor}


if __name__ == "__main__":
    main()
