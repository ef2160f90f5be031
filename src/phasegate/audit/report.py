"""What an audit found: findings and the report that prints them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

KINDS = (
    "undefined-name",
    "duplicate-import",
    "unused-import",
    "symlink",
    "absolute-path",
    "missing-requirement",
    "transitive-import",
    "unshipped-import",
    "syntax-error",
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one deployable folder."""

    folder: str
    path: str
    line: int
    kind: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """``{"folder", "path", "line", "kind", "message"}``."""
        return {
            "folder": self.folder,
            "path": self.path,
            "line": self.line,
            "kind": self.kind,
            "message": self.message,
        }


@dataclass(slots=True)
class AuditReport:
    """Everything an audit found."""

    folders: list[str] = field(default_factory=list)
    files: int = 0
    findings: list[Finding] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts for the report footer and the JSON ``summary``."""
        return {
            "folders": len(self.folders),
            "files": self.files,
            "findings": len(self.findings),
            "by_kind": dict(sorted(Counter(f.kind for f in self.findings).items())),
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON document ``--format json`` prints."""
        return {"findings": [f.to_dict() for f in self.findings], "summary": self.summary()}

    def to_text(self) -> str:
        """Findings grouped by folder, ``file:line kind message``, then a summary."""
        lines: list[str] = []
        by_folder: dict[str, list[Finding]] = {}
        for finding in self.findings:
            by_folder.setdefault(finding.folder, []).append(finding)
        for folder in self.folders:
            found = by_folder.get(folder, [])
            lines.append(f"{folder}: {'ok' if not found else f'{len(found)} finding(s)'}")
            for finding in found:
                lines.append(f"  {finding.path}:{finding.line}: {finding.kind}: {finding.message}")
        summary = self.summary()
        kinds = ", ".join(f"{k} {v}" for k, v in summary["by_kind"].items())
        lines.append(
            f"{summary['folders']} folder(s), {summary['files']} file(s), "
            f"{summary['findings']} finding(s)" + (f" ({kinds})" if kinds else "")
        )
        return "\n".join(lines)
