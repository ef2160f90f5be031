"""What a function folder holds: which files ship, which are tests, and their imports."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pathspec

from phasegate.audit.names import NAMESPACES

SKIP_DIRS = frozenset(
    {
        "__pycache__",
        ".git",
        ".venv",
        "venv",
        "env",
        "node_modules",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
    }
)
TEST_DIRS = frozenset({"tests", "test"})
TEST_REQUIREMENTS = ("requirements-test.txt", "requirements-dev.txt")
_INCLUDE = re.compile(r"^#!include:(.+)$")
# What gcloud functions deploy generates when a folder has no .gcloudignore.
_DEFAULT_TRIGGERS = (".git", ".gitignore", "node_modules")
_DEFAULT_IGNORE = (".gcloudignore", ".git", ".gitignore", "node_modules")


def is_test_file(relative: Path) -> bool:
    """``*_test.py``, ``test_*.py``, ``conftest.py`` or anything under ``tests/``."""
    name = relative.name
    return (
        name == "conftest.py"
        or (name.startswith("test_") and name.endswith(".py"))
        or name.endswith("_test.py")
        or any(part in TEST_DIRS for part in relative.parts[:-1])
    )


def _ignore_lines(path: Path, seen: frozenset[Path] = frozenset()) -> list[str]:
    if not path.is_file() or path.resolve() in seen:
        return []
    lines: list[str] = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        include = _INCLUDE.match(raw.strip())
        if include:
            lines += _ignore_lines(path.parent / include.group(1).strip(), seen | {path.resolve()})
        else:
            lines.append(raw)
    return lines


@dataclass(frozen=True, slots=True)
class Shipping:
    """What ``gcloud functions deploy`` uploads from a folder, per its ``.gcloudignore``."""

    spec: pathspec.GitIgnoreSpec | None

    @classmethod
    def of(cls, folder: Path) -> Shipping:
        """Read ``folder/.gcloudignore`` (``#!include:FILE`` lines followed).

        Without one, ``gcloud functions deploy`` writes its default when the folder
        has ``.git``, ``.gitignore`` or ``node_modules`` (which includes the
        ``.gitignore``), and otherwise uploads everything; so does this.
        """
        ignore = folder / ".gcloudignore"
        if ignore.is_file():
            return cls(pathspec.GitIgnoreSpec.from_lines(_ignore_lines(ignore)))
        if not any((folder / name).exists() for name in _DEFAULT_TRIGGERS):
            return cls(None)
        lines = list(_DEFAULT_IGNORE)
        if (folder / ".gitignore").is_file():
            lines += _ignore_lines(folder / ".gitignore")
        return cls(pathspec.GitIgnoreSpec.from_lines(lines))

    def ships(self, relative: Path, *, directory: bool = False) -> bool:
        """Whether the file (or folder) at ``relative`` to the function folder is uploaded."""
        if self.spec is None:
            return True
        text = relative.as_posix() + ("/" if directory else "")
        return not self.spec.match_file(text)


@dataclass(frozen=True, slots=True)
class Entry:
    """One Python file or symlink found in a folder."""

    path: Path
    relative: Path
    symlink: bool


def walk(folder: Path) -> Iterator[Entry]:
    """Python files and symlinks under ``folder``, in a stable order; symlinks not followed."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = Path(root)
        for name in sorted(dirs):
            if (base / name).is_symlink():
                yield Entry(base / name, (base / name).relative_to(folder), True)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not (base / d).is_symlink())
        for name in sorted(files):
            path = base / name
            if path.is_symlink():
                yield Entry(path, path.relative_to(folder), True)
            elif name.endswith(".py"):
                yield Entry(path, path.relative_to(folder), False)


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module: the full dotted name, where, what it binds, relative level."""

    module: str
    line: int
    bound: str
    level: int
    block: int
    base: str = ""  # the ``from`` part of ``from base import name``

    @property
    def shown(self) -> str:
        """The module to name in a message: the ``from`` part unless it is a bare namespace."""
        return self.base if self.base and self.base not in NAMESPACES else self.module

    @property
    def top(self) -> str:
        """The first part of the module name."""
        return self.module.split(".")[0]


class ImportCollector(ast.NodeVisitor):
    """Every import with the full module it names and the statement list it sits in."""

    def __init__(self) -> None:
        self.imports: list[Import] = []

    def _block(self, body: Sequence[ast.stmt]) -> None:
        block = id(body)
        for statement in body:
            if isinstance(statement, ast.Import):
                for alias in statement.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    self.imports.append(Import(alias.name, statement.lineno, bound, 0, block))
            elif isinstance(statement, ast.ImportFrom):
                base = statement.module or ""
                for alias in statement.names:
                    full = f"{base}.{alias.name}" if base and alias.name != "*" else base
                    bound = alias.asname or alias.name
                    self.imports.append(
                        Import(
                            full or alias.name,
                            statement.lineno,
                            bound,
                            statement.level,
                            block,
                            base,
                        )
                    )
            else:
                self.visit(statement)

    def generic_visit(self, node: ast.AST) -> None:
        """Descend into every statement list (bodies, handlers, match cases)."""
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                self._block(body)
        for handler in getattr(node, "handlers", []) or []:
            self._block(handler.body)
        for case in getattr(node, "cases", []) or []:
            self._block(case.body)

    def visit_Module(self, node: ast.Module) -> None:
        """Start at the module's body."""
        self._block(node.body)


def collect_imports(tree: ast.Module) -> list[Import]:
    """Every import statement's modules in ``tree``."""
    collector = ImportCollector()
    collector.visit(tree)
    return collector.imports
