"""Bundled packages: local code the deploy script copies into every function folder.

``--bundled shared`` says the deploy copies ``shared/`` into each function, so
``import shared`` ships. What ``shared`` itself imports must then be installed
in each function that imports it: when ``shared/`` has its own requirements file
(which the deploy then installs too), its imports are checked once against that
file; otherwise each function's requirements must provide what the bundled
modules it imports (and the bundled modules those import) need.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

from phasegate.audit.files import Shipping, collect_imports, is_test_file, walk


@dataclass(frozen=True, slots=True)
class ThirdPartyImport:
    """An import of something outside the bundled package and the standard library."""

    module: str
    path: str
    line: int
    shown: str


@dataclass(slots=True)
class _Module:
    third_party: list[ThirdPartyImport] = field(default_factory=list)
    internal: list[str] = field(default_factory=list)


def _module_name(package: str, relative: Path) -> str:
    parts = [package, *relative.with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


class BundledPackage:
    """A local package that ships with every function; ``name`` is its import name."""

    def __init__(self, path: Path, requirements: str = "requirements.txt") -> None:
        self.path = path
        self.name = path.resolve().name
        own = path / requirements
        self.requirements_file: Path | None = own if own.is_file() else None
        self._modules: dict[str, _Module] = {}
        shipping = Shipping.of(path)
        for entry in walk(path):
            if entry.symlink or is_test_file(entry.relative) or not shipping.ships(entry.relative):
                continue
            self._read(entry.path, entry.relative)

    def _read(self, path: Path, relative: Path) -> None:
        name = _module_name(self.name, relative)
        is_package = relative.name == "__init__.py"
        module = self._modules.setdefault(name, _Module())
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            return  # the bundled folder's own audit reports it
        for imported in collect_imports(tree):
            if imported.level:
                base = name.split(".")
                keep = len(base) - imported.level + (1 if is_package else 0)
                module.internal.append(".".join([*base[:keep], imported.module]))
            elif imported.top == self.name:
                module.internal.append(imported.module)
            elif imported.top not in sys.stdlib_module_names and imported.top != "__future__":
                location = f"{self.name}/{relative.as_posix()}"
                module.third_party.append(
                    ThirdPartyImport(imported.module, location, imported.line, imported.shown)
                )

    def _resolve(self, dotted: str) -> list[str]:
        """The bundled modules importing ``dotted`` runs: it (or its parent) and its packages."""
        parts = dotted.split(".")
        found: list[str] = []
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            if prefix in self._modules:
                found.append(prefix)
        return found

    def needs(self, dotted: str) -> list[ThirdPartyImport]:
        """Third-party imports reached when a function imports ``dotted`` from this package."""
        seen: set[str] = set()
        pending = self._resolve(dotted)
        needed: list[ThirdPartyImport] = []
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            module = self._modules[current]
            needed.extend(module.third_party)
            for target in module.internal:
                pending.extend(self._resolve(target))
        return sorted(needed, key=lambda item: (item.path, item.line, item.module))
