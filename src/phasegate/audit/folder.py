"""Audit of one deployable folder (a folder with a ``main.py``).

Name checks (undefined, unused) come from pyflakes; the rest (duplicate imports,
symlinks, absolute paths, requirements, unshipped local packages) is the
deployment-specific part no linter knows about.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyflakes import messages as flakes
from pyflakes.checker import Checker

from phasegate.audit.bundled import BundledPackage
from phasegate.audit.files import (
    TEST_REQUIREMENTS,
    Import,
    Shipping,
    collect_imports,
    is_test_file,
    walk,
)
from phasegate.audit.names import ProvidesIndex, read_requirements, satisfied
from phasegate.audit.report import Finding

_IGNORE = re.compile(r"#\s*phasegate:\s*ignore(?:\[([a-z\-,\s]+)\])?")
_ABSOLUTE = re.compile(
    r"(?:^|(?<=[\s'\"=(,:]))(/(?:home|Users|root|mnt|opt|srv|var|tmp|workspace|data|private)/[^\s'\"]*)"
    r"|(?:^|(?<=[\s'\"=(,]))([A-Za-z]:\\[^\s'\"]*)"
)


@dataclass(frozen=True, slots=True)
class AuditContext:
    """What every folder of one audit shares."""

    index: ProvidesIndex
    requirements: str = "requirements.txt"
    strict: bool = False
    bundled: Mapping[str, BundledPackage] = field(default_factory=dict)
    search_roots: Sequence[Path] = ()


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a set of declared distributions makes importable, directly or along with them."""

    source: str
    direct: frozenset[str]
    brought: Mapping[str, tuple[str, str]]  # module -> (distribution, declared one bringing it)

    @classmethod
    def of(cls, source: str, declared: set[str], index: ProvidesIndex) -> Resolution:
        """Resolve ``declared`` distributions (named in ``source``) through ``index``."""
        brought: dict[str, tuple[str, str]] = {}
        for dist, root in sorted(index.brought_by(declared).items()):
            for module in index.info(dist).modules:
                brought.setdefault(module, (dist, root))
        return cls(source, frozenset(index.modules(declared)), brought)

    def bringer(self, module: str) -> tuple[str, str] | None:
        """``(distribution, declared)`` when ``module`` only comes along with a declared one."""
        for provided, origin in self.brought.items():
            if satisfied(module, (provided,)):
                return origin
        return None


class FolderAudit:
    """Audits one deployable folder; ``check_requirements=False`` checks names only."""

    def __init__(
        self,
        folder: Path,
        *,
        label: str,
        context: AuditContext,
        check_requirements: bool = True,
    ) -> None:
        self.folder = folder
        self.label = label
        self.context = context
        self.shipping = Shipping.of(folder)
        index = context.index
        deploy = read_requirements(folder / context.requirements)
        self.deploy = (
            Resolution.of(context.requirements, deploy, index) if check_requirements else None
        )
        test_files = [name for name in TEST_REQUIREMENTS if (folder / name).is_file()]
        self.tests: Resolution | None = None
        if test_files:
            declared = set(deploy)
            for name in test_files:
                declared |= read_requirements(folder / name)
            self.tests = Resolution.of(" / ".join(test_files), declared, index)
        self.findings: list[Finding] = []
        self.files = 0

    def run(self) -> list[Finding]:
        """Audit every file of the folder that ships or is a test."""
        for entry in walk(self.folder):
            test = is_test_file(entry.relative)
            if entry.symlink:
                if self.shipping.ships(entry.relative, directory=entry.path.is_dir()):
                    target = os.readlink(entry.path)
                    self.add(
                        entry.relative,
                        0,
                        "symlink",
                        f"symlink to {target} (uploads break or leak files)",
                    )
            elif test or self.shipping.ships(entry.relative):
                self._audit_file(entry.path, entry.relative, test=test)
        return self.findings

    def add(
        self, relative: Path, line: int, kind: str, message: str, source: list[str] | None = None
    ) -> None:
        """Record a finding unless a ``# phasegate: ignore[kind]`` comment on its line says not."""
        if source is not None and 0 < line <= len(source):
            match = _IGNORE.search(source[line - 1])
            if match and (
                match.group(1) is None or kind in {k.strip() for k in match.group(1).split(",")}
            ):
                return
        self.findings.append(Finding(self.label, relative.as_posix(), line, kind, message))

    def _audit_file(self, path: Path, relative: Path, *, test: bool) -> None:
        self.files += 1
        text = path.read_text(encoding="utf-8", errors="replace")
        source = text.splitlines()
        try:
            tree = ast.parse(text, filename=str(path))
        except SyntaxError as exc:
            self.add(relative, exc.lineno or 0, "syntax-error", f"{exc.msg}", source)
            return
        self._names(path, relative, tree, source)
        imports = collect_imports(tree)
        self._duplicates(relative, imports, source)
        resolution = self.tests if test else self.deploy
        if resolution is not None:
            checker = _ImportCheck(self, relative, path, source, resolution, test=test)
            checker.check(imports)
        if not test:
            self._paths(relative, tree, source)

    def _names(self, path: Path, relative: Path, tree: ast.Module, source: list[str]) -> None:
        checker = Checker(tree, filename=str(path))
        for message in sorted(checker.messages, key=lambda m: m.lineno):
            if isinstance(message, flakes.UndefinedName):
                name = message.message_args[0]
                self.add(
                    relative,
                    message.lineno,
                    "undefined-name",
                    f"{name!r} is used but never defined or imported",
                    source,
                )
            elif isinstance(message, flakes.UnusedImport) and path.name != "__init__.py":
                self.add(
                    relative,
                    message.lineno,
                    "unused-import",
                    f"{message.message_args[0]!r} is imported but unused",
                    source,
                )

    def _duplicates(self, relative: Path, imports: list[Import], source: list[str]) -> None:
        seen: dict[tuple[int, str, str, int], int] = {}
        for imported in imports:
            key = (imported.block, imported.bound, imported.module, imported.level)
            if key in seen:
                self.add(
                    relative,
                    imported.line,
                    "duplicate-import",
                    f"{imported.bound!r} is imported again (first on line {seen[key]})",
                    source,
                )
            else:
                seen[key] = imported.line

    def _paths(self, relative: Path, tree: ast.Module, source: list[str]) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for match in _ABSOLUTE.finditer(node.value):
                    found = match.group(1) or match.group(2)
                    self.add(
                        relative,
                        node.lineno,
                        "absolute-path",
                        f"hard-coded absolute path {found!r}",
                        source,
                    )

    def local(self, top: str, directory: Path) -> Path | None:
        """The module or package ``top`` inside this folder (or beside the file), if any."""
        for base in dict.fromkeys((self.folder, directory)):
            module = base / f"{top}.py"
            if module.is_file():
                return module
            package = base / top
            if package.is_dir() and (
                (package / "__init__.py").is_file() or any(package.glob("*.py"))
            ):
                return package
        return None

    def outside(self, top: str) -> Path | None:
        """A local package ``top`` elsewhere in the repository (packages only, not folders)."""
        for directory in self.context.search_roots:
            for candidate in (directory / top / "__init__.py", directory / f"{top}.py"):
                if candidate.is_file() and self.folder not in candidate.parents:
                    return candidate.parent if candidate.name == "__init__.py" else candidate
        return None


class _ImportCheck:
    """The requirement and shipping checks of one file's imports."""

    def __init__(
        self,
        audit: FolderAudit,
        relative: Path,
        path: Path,
        source: list[str],
        resolution: Resolution,
        *,
        test: bool,
    ) -> None:
        self.audit = audit
        self.relative = relative
        self.path = path
        self.source = source
        self.resolution = resolution
        self.test = test
        self.reported: set[str] = set()

    def report(self, imported: Import, kind: str, message: str, key: str | None = None) -> None:
        self.reported.add(key or imported.top)
        self.audit.add(self.relative, imported.line, kind, message, self.source)

    def check(self, imports: list[Import]) -> None:
        """Check every absolute import once per top-level name."""
        for imported in imports:
            top = imported.top
            if imported.level > 0 or not imported.module:
                continue
            bundled = self.audit.context.bundled.get(top)
            if bundled is not None:
                if not self.test:
                    self._bundled(imported, bundled)
            elif not (
                top in self.reported or top in sys.stdlib_module_names or top == "__future__"
            ):
                self._third_party_or_local(imported)

    def _third_party_or_local(self, imported: Import) -> None:
        top = imported.top
        audit = self.audit
        found = audit.local(top, self.path.parent)
        provided = satisfied(imported.module, self.resolution.direct)
        if found is not None:
            relative = found.relative_to(audit.folder)
            ships = audit.shipping.ships(relative, directory=found.is_dir())
            if self.test or ships or provided:
                return
            self.report(
                imported,
                "unshipped-import",
                f"local module {top!r} is excluded by .gcloudignore, so the deployed "
                "function cannot import it",
            )
            return
        if provided:
            return
        elsewhere = None if self.test else audit.outside(top)
        if elsewhere is not None:
            self.report(
                imported,
                "unshipped-import",
                f"local package {top!r} (in {elsewhere}) is imported but not inside "
                "this folder, so it is missing when the folder is deployed alone "
                "(use --bundled if the deploy copies it in)",
            )
            return
        self._requirement(imported, imported.module, repr(imported.shown))

    def _requirement(
        self, imported: Import, module: str, what: str, key: str | None = None
    ) -> None:
        origin = self.resolution.bringer(module)
        if origin is not None:
            if self.audit.context.strict:
                dist, declared = origin
                self.report(
                    imported,
                    "transitive-import",
                    f"{what} comes only with {dist!r}, which {declared!r} requires; "
                    f"declare it in {self.resolution.source}",
                    key,
                )
            return
        self.report(
            imported,
            "missing-requirement",
            f"{what} is imported but no distribution in {self.resolution.source} provides it",
            key,
        )

    def _bundled(self, imported: Import, bundled: BundledPackage) -> None:
        if bundled.requirements_file is not None:
            return  # checked once, against the bundled package's own requirements
        for need in bundled.needs(imported.module):
            need_top = need.module.split(".")[0]
            if need_top in self.reported or satisfied(need.module, self.resolution.direct):
                continue
            what = (
                f"{need.shown!r} (imported by bundled {need.path}:{need.line}, "
                f"which {imported.shown!r} loads)"
            )
            self._requirement(imported, need.module, what, key=need_top)
