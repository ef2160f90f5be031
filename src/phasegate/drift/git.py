"""Git history, read once for all services, and ``auto:`` source discovery."""

from __future__ import annotations

import ast
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from phasegate.errors import ConfigError

_RECORD, _FIELD = "\x1e", "\x1f"


@dataclass(frozen=True, slots=True)
class Commit:
    """One commit: its sha, committer date, subject and the files it touched."""

    sha: str
    date: datetime
    subject: str
    files: tuple[str, ...]


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class GitRepo:
    """A git work tree, asked through the ``git`` command."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            top = self._git("rev-parse", "--show-toplevel", cwd=path).strip()
        except ConfigError:
            raise ConfigError(f"{path}: not a git repository") from None
        self.top = Path(top)
        self.prefix = path.resolve().relative_to(self.top.resolve()).as_posix()
        if self.prefix == ".":
            self.prefix = ""
        self._commits: list[Commit] | None = None
        self._index: dict[str, list[int]] = {}

    def _git(self, *args: str, cwd: Path | None = None, check: bool = True) -> str:
        try:
            result = subprocess.run(
                ["git", *args], cwd=cwd or self.top, capture_output=True, text=True, check=False
            )
        except FileNotFoundError:
            raise ConfigError("git is not installed") from None
        if check and result.returncode != 0:
            raise ConfigError(f"git {' '.join(args[:2])} failed: {result.stderr.strip()[:300]}")
        return result.stdout

    def repo_path(self, source: str) -> str:
        """A source path relative to the configured repo, as a path from the git top."""
        cleaned = source.strip("/").removeprefix("./")
        return f"{self.prefix}/{cleaned}".strip("/") if self.prefix else cleaned

    def history(self) -> list[Commit]:
        """Every commit reachable from HEAD, newest first, with its files (read once)."""
        if self._commits is None:
            output = self._git(
                "log",
                "--no-color",
                "--no-renames",
                f"--format={_RECORD}%H{_FIELD}%cI{_FIELD}%s",
                "--name-only",
                "HEAD",
            )
            commits = []
            for record in output.split(_RECORD)[1:]:
                head, _, body = record.partition("\n")
                sha, date, subject = head.split(_FIELD, 2)
                files = tuple(line for line in body.splitlines() if line)
                commits.append(Commit(sha, datetime.fromisoformat(date), subject, files))
            index: dict[str, list[int]] = defaultdict(list)
            for position, commit in enumerate(commits):
                seen: set[str] = set()
                for file in commit.files:
                    seen.update(_prefixes(file))
                for prefix in seen:
                    index[prefix].append(position)
            self._commits, self._index = commits, dict(index)
        return self._commits

    def touching(self, paths: Iterable[str]) -> list[Commit]:
        """Commits (newest first) that touched any of ``paths`` (files or folders)."""
        commits = self.history()
        positions: set[int] = set()
        for path in paths:
            positions.update(self._index.get(path.strip("/"), ()))
        return [commits[p] for p in sorted(positions)]

    def resolve(self, sha: str) -> str | None:
        """The full sha of ``sha`` if git knows that commit."""
        out = self._git(
            "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}", check=False
        ).strip()
        return out or None

    def is_ancestor(self, sha: str) -> bool:
        """Whether ``sha`` is an ancestor of HEAD."""
        result = subprocess.run(
            ["git", "merge-base", "--is-ancestor", sha, "HEAD"],
            cwd=self.top,
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def since(self, sha: str) -> set[str]:
        """Commits reachable from HEAD but not from ``sha``."""
        return set(self._git("rev-list", f"{sha}..HEAD").split())


def auto_sources(repo: GitRepo, entry: str) -> tuple[str, ...]:
    """The entry file's folder plus every local module it imports, transitively."""
    top = repo.top
    entry_path = top / repo.repo_path(entry)
    if not entry_path.is_file():
        raise ConfigError(f"auto:{entry}: no such file in the repository")
    folder = entry_path.parent
    found: set[Path] = set()
    pending = [entry_path]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        found.add(current)
        try:
            tree = ast.parse(current.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for module, level in _imported_modules(tree):
            for candidate in _candidates(module, level, current, folder, top):
                if candidate.is_file() and candidate not in found:
                    pending.append(candidate)
    paths = {folder.relative_to(top).as_posix()}
    paths.update(p.relative_to(top).as_posix() for p in found if folder not in p.parents)
    return tuple(sorted(paths))


def _imported_modules(tree: ast.Module) -> Iterable[tuple[str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            yield base, node.level
            for alias in node.names:
                if alias.name != "*":
                    yield (f"{base}.{alias.name}" if base else alias.name), node.level


def _candidates(module: str, level: int, current: Path, folder: Path, top: Path) -> Sequence[Path]:
    parts = [p for p in module.split(".") if p]
    if level > 0:
        bases = [current.parents[level - 1]] if level - 1 < len(current.parents) else []
    else:
        bases = [folder, top]
    found: list[Path] = []
    for base in bases:
        directory = base
        for index, part in enumerate(parts):
            package = directory / part
            if (package / "__init__.py").is_file():
                found.append(package / "__init__.py")
            if index == len(parts) - 1 and (directory / f"{part}.py").is_file():
                found.append(directory / f"{part}.py")
            directory = package
        if found:
            break
    return found
