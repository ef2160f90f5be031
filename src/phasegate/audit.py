"""``phasegate audit``: catch broken function folders before they ship.

Name checks (undefined, unused) come from pyflakes; the rest (duplicate imports,
symlinks, absolute paths, requirements, unshipped local packages) is the
deployment-specific part no linter knows about.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyflakes import messages as flakes
from pyflakes.checker import Checker

KINDS = (
    "undefined-name",
    "duplicate-import",
    "unused-import",
    "symlink",
    "absolute-path",
    "missing-requirement",
    "unshipped-import",
    "syntax-error",
)
_SKIP_DIRS = {
    "__pycache__",
    ".git",
    ".venv",
    "venv",
    "env",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
}
_IGNORE = re.compile(r"#\s*phasegate:\s*ignore(?:\[([a-z\-,\s]+)\])?")
_ABSOLUTE = re.compile(
    r"(?:^|(?<=[\s'\"=(,:]))(/(?:home|Users|root|mnt|opt|srv|var|tmp|workspace|data|private)/[^\s'\"]*)"
    r"|(?:^|(?<=[\s'\"=(,]))([A-Za-z]:\\[^\s'\"]*)"
)
# Distributions whose import name is not their own name (PEP 503-normalised keys).
KNOWN_IMPORTS: dict[str, tuple[str, ...]] = {
    "beautifulsoup4": ("bs4",),
    "pyyaml": ("yaml",),
    "pillow": ("PIL",),
    "scikit-learn": ("sklearn",),
    "python-dateutil": ("dateutil",),
    "python-dotenv": ("dotenv",),
    "protobuf": ("google.protobuf",),
    "opencv-python": ("cv2",),
    "opencv-python-headless": ("cv2",),
    "psycopg2-binary": ("psycopg2",),
    "psycopg-binary": ("psycopg",),
    "pyjwt": ("jwt",),
    "attrs": ("attr", "attrs"),
    "pymysql": ("pymysql",),
    "mysqlclient": ("MySQLdb",),
    "google-api-python-client": ("googleapiclient",),
    "google-auth": ("google.auth", "google.oauth2"),
    "google-cloud-pubsub": ("google.cloud.pubsub", "google.cloud.pubsub_v1"),
    "google-cloud-firestore": ("google.cloud.firestore", "google.cloud.firestore_v1"),
    "google-cloud-bigquery": ("google.cloud.bigquery",),
    "google-cloud-storage": ("google.cloud.storage",),
    "google-cloud-secret-manager": ("google.cloud.secretmanager",),
    "google-cloud-logging": ("google.cloud.logging",),
    "google-cloud-tasks": ("google.cloud.tasks", "google.cloud.tasks_v2"),
    "functions-framework": ("functions_framework",),
    "slack-sdk": ("slack_sdk",),
    "nats-py": ("nats",),
    "pyarrow": ("pyarrow",),
    "msgpack-python": ("msgpack",),
    "typing-extensions": ("typing_extensions",),
}


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


def normalise(name: str) -> str:
    """PEP 503 normalisation of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: Path) -> set[str]:
    """Distribution names in a requirements file (options, markers and versions dropped)."""
    names: set[str] = set()
    if not path.is_file():
        return names
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        if "#egg=" in raw:
            line = raw.split("#egg=", 1)[1]
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._\-]*", line)
        if match:
            names.add(normalise(match.group(0)))
    return names


def import_names(distribution: str) -> tuple[str, ...]:
    """The modules a distribution provides, as far as we can tell without installing it."""
    key = normalise(distribution)
    if key in KNOWN_IMPORTS:
        return KNOWN_IMPORTS[key]
    if key.startswith("google-cloud-"):
        return ("google.cloud." + key.removeprefix("google-cloud-").replace("-", "_"),)
    return (key.replace("-", "_"),)


def _satisfied(module: str, provided: Iterable[str]) -> bool:
    return any(
        module == p or module.startswith(p + ".") or p.startswith(module + ".") for p in provided
    )


@dataclass(frozen=True, slots=True)
class _Import:
    module: str
    line: int
    bound: str
    level: int
    block: int


class _ImportCollector(ast.NodeVisitor):
    """Every import with the full module it names and the statement list it sits in."""

    def __init__(self) -> None:
        self.imports: list[_Import] = []

    def _block(self, body: Sequence[ast.stmt]) -> None:
        block = id(body)
        for statement in body:
            if isinstance(statement, ast.Import):
                for alias in statement.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    self.imports.append(_Import(alias.name, statement.lineno, bound, 0, block))
            elif isinstance(statement, ast.ImportFrom):
                base = statement.module or ""
                for alias in statement.names:
                    full = f"{base}.{alias.name}" if base and alias.name != "*" else base
                    bound = alias.asname or alias.name
                    self.imports.append(
                        _Import(full or alias.name, statement.lineno, bound, statement.level, block)
                    )
            else:
                self.visit(statement)

    def generic_visit(self, node: ast.AST) -> None:
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                self._block(body)
        for handler in getattr(node, "handlers", []) or []:
            self._block(handler.body)
        for case in getattr(node, "cases", []) or []:
            self._block(case.body)

    def visit_Module(self, node: ast.Module) -> None:
        self._block(node.body)


class FolderAudit:
    """Audits one deployable folder (a folder with a ``main.py``)."""

    def __init__(
        self,
        folder: Path,
        *,
        label: str,
        requirements: str = "requirements.txt",
        shared: Sequence[Path] = (),
        search_roots: Sequence[Path] = (),
    ) -> None:
        self.folder = folder
        self.label = label
        self.requirements = requirements
        self.shared = shared
        self.search_roots = search_roots
        self.required = read_requirements(folder / requirements)
        self.provided = {name for dist in self.required for name in import_names(dist)}
        self.findings: list[Finding] = []
        self.files = 0

    def run(self) -> list[Finding]:
        """Audit every file of the folder."""
        for path in self._walk():
            self._audit_file(path)
        return self.findings

    def _walk(self) -> Iterator[Path]:
        for root, dirs, files in os.walk(self.folder, followlinks=False):
            base = Path(root)
            for name in sorted(dirs):
                if (base / name).is_symlink():
                    self._symlink(base / name)
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not (base / d).is_symlink())
            for name in sorted(files):
                path = base / name
                if path.is_symlink():
                    self._symlink(path)
                elif name.endswith(".py"):
                    yield path

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.folder).as_posix()

    def _add(
        self, path: Path, line: int, kind: str, message: str, source: list[str] | None = None
    ) -> None:
        if source is not None and 0 < line <= len(source):
            match = _IGNORE.search(source[line - 1])
            if match and (
                match.group(1) is None or kind in {k.strip() for k in match.group(1).split(",")}
            ):
                return
        self.findings.append(Finding(self.label, self._relative(path), line, kind, message))

    def _symlink(self, path: Path) -> None:
        target = os.readlink(path)
        self._add(path, 0, "symlink", f"symlink to {target} (uploads break or leak files)")

    def _audit_file(self, path: Path) -> None:
        self.files += 1
        text = path.read_text(encoding="utf-8", errors="replace")
        source = text.splitlines()
        try:
            tree = ast.parse(text, filename=str(path))
        except SyntaxError as exc:
            self._add(path, exc.lineno or 0, "syntax-error", f"{exc.msg}", source)
            return
        self._names(path, tree, source)
        self._imports(path, tree, source)
        self._paths(path, tree, source)

    def _names(self, path: Path, tree: ast.Module, source: list[str]) -> None:
        checker = Checker(tree, filename=str(path))
        for message in sorted(checker.messages, key=lambda m: m.lineno):
            if isinstance(message, flakes.UndefinedName):
                name = message.message_args[0]
                self._add(
                    path,
                    message.lineno,
                    "undefined-name",
                    f"{name!r} is used but never defined or imported",
                    source,
                )
            elif isinstance(message, flakes.UnusedImport) and path.name != "__init__.py":
                self._add(
                    path,
                    message.lineno,
                    "unused-import",
                    f"{message.message_args[0]!r} is imported but unused",
                    source,
                )

    def _imports(self, path: Path, tree: ast.Module, source: list[str]) -> None:
        collector = _ImportCollector()
        collector.visit(tree)
        seen: dict[tuple[int, str, str, int], int] = {}
        for imported in collector.imports:
            key = (imported.block, imported.bound, imported.module, imported.level)
            if key in seen:
                self._add(
                    path,
                    imported.line,
                    "duplicate-import",
                    f"{imported.bound!r} is imported again (first on line {seen[key]})",
                    source,
                )
            else:
                seen[key] = imported.line
        reported: set[str] = set()
        for imported in collector.imports:
            if imported.level > 0 or not imported.module:
                continue
            top = imported.module.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__" or self._local(top, path):
                continue
            if top in reported:
                continue
            shipped_elsewhere = self._found_outside(top)
            if shipped_elsewhere is not None:
                reported.add(top)
                self._add(
                    path,
                    imported.line,
                    "unshipped-import",
                    f"local package {top!r} (in {shipped_elsewhere}) is imported but not inside "
                    "this folder, so it is missing when the folder is deployed alone",
                    source,
                )
            elif not _satisfied(imported.module, self.provided):
                reported.add(top)
                self._add(
                    path,
                    imported.line,
                    "missing-requirement",
                    f"{imported.module!r} is imported but no distribution in "
                    f"{self.requirements} provides it",
                    source,
                )

    def _local(self, top: str, path: Path) -> bool:
        for directory in {self.folder, path.parent}:
            if (directory / f"{top}.py").exists() or (directory / top).is_dir():
                return True
        return False

    def _found_outside(self, top: str) -> str | None:
        for directory in [*self.shared, *self.search_roots]:
            if directory.name == top and directory.is_dir():
                return str(directory)
            for candidate in (directory / top, directory / f"{top}.py"):
                if (
                    candidate.exists()
                    and self.folder not in candidate.parents
                    and candidate != self.folder
                ):
                    return str(candidate)
        return None

    def _paths(self, path: Path, tree: ast.Module, source: list[str]) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for match in _ABSOLUTE.finditer(node.value):
                    found = match.group(1) or match.group(2)
                    self._add(
                        path,
                        node.lineno,
                        "absolute-path",
                        f"hard-coded absolute path {found!r}",
                        source,
                    )


def _search_roots(root: Path) -> list[Path]:
    """Where local packages live: from ``root`` up to its git repository's top (or one up)."""
    chain = [root, *root.parents]
    for index, directory in enumerate(chain):
        if (directory / ".git").exists():
            return chain[: index + 1]
    return chain[:2]


def find_folders(root: Path) -> list[Path]:
    """Deployable folders (with a ``main.py``) at or under ``root``, outermost only."""
    if (root / "main.py").is_file():
        return [root]
    found: list[Path] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        if "main.py" in files:
            found.append(Path(current))
            dirs[:] = []
    return sorted(found)


def audit(
    paths: Sequence[str | os.PathLike[str]],
    *,
    requirements: str = "requirements.txt",
    shared: Sequence[str | os.PathLike[str]] = (),
) -> AuditReport:
    """Audit every deployable folder under ``paths``; raises FileNotFoundError for a bad path."""
    report = AuditReport()
    shared_dirs = [Path(s).resolve() for s in shared]
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or folder")
        search_roots = _search_roots(root.resolve())
        for folder in find_folders(root):
            label = folder.as_posix()
            auditor = FolderAudit(
                folder.resolve(),
                label=label,
                requirements=requirements,
                shared=shared_dirs,
                search_roots=search_roots,
            )
            report.findings.extend(auditor.run())
            report.folders.append(label)
            report.files += auditor.files
    return report
