"""Run an audit over paths: find the folders, load the settings, collect the report."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phasegate.audit.bundled import BundledPackage
from phasegate.audit.files import SKIP_DIRS
from phasegate.audit.folder import AuditContext, FolderAudit
from phasegate.audit.names import ProvidesIndex, default_index
from phasegate.audit.report import AuditReport

_SETTINGS_KEYS = {"provides", "strict", "bundled"}


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """``[audit]`` in a pipeline file, or ``[tool.phasegate.audit]`` in ``pyproject.toml``.

    ``provides`` maps a distribution to the modules it provides; ``bundled`` paths
    are relative to the file that names them.
    """

    provides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    strict: bool = False
    bundled: tuple[Path, ...] = ()

    @classmethod
    def parse(cls, table: Mapping[str, Any], source: str, base: Path) -> AuditSettings:
        """Validate one table; raises ValueError naming ``source`` and the key."""
        unknown = set(table) - _SETTINGS_KEYS
        if unknown:
            raise ValueError(
                f"{source}: unknown key {sorted(unknown)[0]!r}; expected one of: "
                f"{', '.join(sorted(_SETTINGS_KEYS))}"
            )
        provides = table.get("provides", {})
        if not isinstance(provides, dict) or not all(
            isinstance(mods, list) and all(isinstance(m, str) for m in mods)
            for mods in provides.values()
        ):
            raise ValueError(
                f"{source}: provides must map a distribution to a list of modules, "
                f'e.g. provides = {{"my-dist" = ["mymod"]}}'
            )
        strict = table.get("strict", False)
        if not isinstance(strict, bool):
            raise ValueError(f"{source}: strict must be true or false")
        bundled = table.get("bundled", [])
        if not isinstance(bundled, list) or not all(isinstance(b, str) for b in bundled):
            raise ValueError(f"{source}: bundled must be a list of folder paths")
        return cls(
            {dist: tuple(mods) for dist, mods in provides.items()},
            strict,
            tuple(base / b for b in bundled),
        )

    def merged(self, other: AuditSettings) -> AuditSettings:
        """These settings with ``other``'s on top."""
        return AuditSettings(
            {**self.provides, **other.provides},
            self.strict or other.strict,
            (*self.bundled, *other.bundled),
        )


def load_settings(
    config: str | os.PathLike[str] | None, paths: Sequence[str | os.PathLike[str]]
) -> AuditSettings:
    """Settings from the audited repository's ``pyproject.toml``, then ``config``'s ``[audit]``.

    Raises ValueError for a malformed table, FileNotFoundError for a missing file.
    """
    settings = AuditSettings()
    seen: set[Path] = set()
    for path in paths:
        for directory in search_roots(Path(path).resolve()):
            pyproject = directory / "pyproject.toml"
            if pyproject.is_file() and pyproject not in seen:
                seen.add(pyproject)
                with pyproject.open("rb") as handle:
                    table = tomllib.load(handle).get("tool", {}).get("phasegate", {}).get("audit")
                if table is not None:
                    source = f"{pyproject} [tool.phasegate.audit]"
                    settings = settings.merged(AuditSettings.parse(table, source, directory))
    if config is not None:
        file = Path(config)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such pipeline file")
        with file.open("rb") as handle:
            table = tomllib.load(handle).get("audit")
        if table is not None:
            parsed = AuditSettings.parse(table, f"{file} [audit]", file.parent)
            settings = settings.merged(parsed)
    return settings


def search_roots(root: Path) -> list[Path]:
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
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        if "main.py" in files:
            found.append(Path(current))
            dirs[:] = []
    return sorted(found)


def audit(
    paths: Sequence[str | os.PathLike[str]],
    *,
    requirements: str = "requirements.txt",
    bundled: Sequence[str | os.PathLike[str]] = (),
    shared: Sequence[str | os.PathLike[str]] = (),
    strict: bool = False,
    provides: Mapping[str, Sequence[str]] | None = None,
    use_installed: bool = True,
) -> AuditReport:
    """Audit every deployable folder under ``paths``.

    ``bundled`` (alias ``shared``) are local packages the deploy copies into every
    function; ``strict`` also reports imports only a declared distribution brings;
    ``provides`` adds distribution -> modules answers; ``use_installed=False``
    ignores the running environment's package metadata. Raises FileNotFoundError
    for a path or bundled folder that does not exist.
    """
    roots = [Path(raw) for raw in paths]
    for root in [*roots, *(Path(b) for b in (*bundled, *shared))]:
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or folder")
    packages = {
        package.name: package
        for package in (
            BundledPackage(Path(b).resolve(), requirements) for b in (*bundled, *shared)
        )
    }
    index = (
        default_index()
        if not provides and use_installed
        else ProvidesIndex(provides, use_installed=use_installed)
    )
    report = AuditReport()
    for package in packages.values():
        context = AuditContext(index, requirements, strict, packages, ())
        auditor = FolderAudit(
            package.path.resolve(),
            label=package.path.as_posix(),
            context=context,
            check_requirements=package.requirements_file is not None,
        )
        report.findings.extend(auditor.run())
        report.folders.append(auditor.label)
        report.files += auditor.files
    bundled_paths = {package.path.resolve() for package in packages.values()}
    for root in roots:
        context = AuditContext(index, requirements, strict, packages, search_roots(root.resolve()))
        for folder in find_folders(root):
            if folder.resolve() in bundled_paths:
                continue
            auditor = FolderAudit(folder.resolve(), label=folder.as_posix(), context=context)
            report.findings.extend(auditor.run())
            report.folders.append(auditor.label)
            report.files += auditor.files
    return report
