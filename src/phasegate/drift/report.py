"""Drift reports as coloured text, JSON or Markdown."""

from __future__ import annotations

import json
import shlex
from datetime import datetime

from phasegate.drift.core import DriftReport, DriftStatus, ServiceDrift

ICONS = {
    DriftStatus.OK: "✅",
    DriftStatus.MINOR: "⚠️",
    DriftStatus.STALE: "❌",
    DriftStatus.UNKNOWN: "❓",
}
_COLOURS = {
    DriftStatus.OK: "\033[32m",
    DriftStatus.MINOR: "\033[33m",
    DriftStatus.STALE: "\033[31m",
    DriftStatus.UNKNOWN: "\033[35m",
}
_RESET = "\033[0m"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "unknown"


def _behind(service: ServiceDrift) -> str:
    if service.status is DriftStatus.UNKNOWN:
        return service.error or "unknown"
    if service.status is DriftStatus.OK:
        return "up to date"
    text = f"{service.behind_hours or 0:.1f}h behind"
    if service.commits_behind is not None:
        text += f", {service.commits_behind} commit(s)"
    return text


def git_command(report: DriftReport, service: ServiceDrift) -> str:
    """The git command that shows what changed since the deployment."""
    paths = " ".join(shlex.quote(p) for p in report.sources.get(service.name, ()))
    if service.deployed_commit:
        return f"git log --oneline {service.deployed_commit[:12]}..HEAD -- {paths}"
    since = service.deployed_at.strftime("%Y-%m-%dT%H:%M:%SZ") if service.deployed_at else ""
    return f"git log --oneline --since={since} -- {paths}"


def to_text(report: DriftReport, *, verbose: bool = False, colour: bool = False) -> str:
    """One line per service, details when behind, and a summary."""
    lines = [f"Deployment drift in {report.repo} (stale after {report.stale_hours:g}h)", ""]
    for service in report.services:
        icon = ICONS[service.status]
        label = service.status.value.upper()
        if colour:
            label = f"{_COLOURS[service.status]}{label}{_RESET}"
        lines.append(f"{icon} {service.name}: {label} — {_behind(service)}")
        if service.status is not DriftStatus.UNKNOWN:
            lines.append(
                f"    deployed {_when(service.deployed_at)}"
                + (f" from {service.deployed_commit[:12]}" if service.deployed_commit else "")
                + f"; sources changed {_when(service.source_changed_at)}"
            )
        if service.status in {DriftStatus.MINOR, DriftStatus.STALE}:
            lines.append(f"    see: {git_command(report, service)}")
            if service.deploy:
                lines.append(f"    deploy: {service.deploy}")
            if verbose:
                for commit in service.recent_commits:
                    lines.append(f"      {commit.sha[:10]} {_when(commit.date)} {commit.subject}")
    summary = report.summary()
    drifted = summary["minor"] + summary["stale"]
    lines += [
        "",
        f"Services checked: {summary['checked']}, with drift: {drifted} "
        f"(stale {summary['stale']}, minor {summary['minor']}, unknown {summary['unknown']})",
    ]
    return "\n".join(lines)


def to_json(report: DriftReport, *, verbose: bool = False) -> str:
    """The JSON document (recent commits always listed, up to 5 each)."""
    return json.dumps(report.to_dict(verbose=True), indent=2)


def to_markdown(report: DriftReport, *, verbose: bool = False, limit: int | None = None) -> str:
    """A Markdown table (for job summaries and the GitHub issue)."""
    summary = report.summary()
    lines = [
        "## Deployment drift",
        "",
        f"Checked {_when(report.checked_at)} against `{report.repo}`; stale after "
        f"{report.stale_hours:g} h. **{summary['stale']} stale**, {summary['minor']} minor, "
        f"{summary['ok']} ok, {summary['unknown']} unknown.",
        "",
        "| | service | status | deployed | sources changed | behind |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for service in report.services:
        behind = _behind(service).replace("|", "\\|")
        lines.append(
            f"| {ICONS[service.status]} | `{service.name}` | {service.status.value} | "
            f"{_when(service.deployed_at)} | {_when(service.source_changed_at)} | {behind} |"
        )
    if verbose:
        for service in report.services:
            if service.recent_commits:
                lines += ["", f"### `{service.name}`", "", f"`{git_command(report, service)}`", ""]
                lines += [
                    f"- `{c.sha[:10]}` {_when(c.date)} {c.subject}" for c in service.recent_commits
                ]
    text = "\n".join(lines) + "\n"
    if limit is not None and len(text) > limit:
        note = "\n\n… (report truncated)\n"
        text = text[: max(0, limit - len(note))].rsplit("\n", 1)[0] + note
        text = text[:limit]
    return text
