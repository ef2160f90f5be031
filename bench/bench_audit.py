"""Audit speed: a function folder of 200 files, against just parsing them (the floor).

Run: .venv/bin/python bench/bench_audit.py   (prints medians and the ratio)
"""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path

from common import median_seconds

from phasegate.audit import audit

MODULE = '''
import json
import logging
from google.cloud import firestore

from pkg{package}.helpers import helper_{index}

log = logging.getLogger(__name__)


def handler_{index}(request):
    """A request handler like the ones in real functions."""
    payload = json.loads(request)
    for key, value in payload.items():
        log.info("%s=%s", key, value)
    return {{"ts": firestore.SERVER_TIMESTAMP, "value": helper_{index}(payload)}}
'''


def build(root: Path, files: int = 200) -> Path:
    folder = root / "fn"
    # 10 packages of __init__ + helpers, main.py, and modules up to ``files`` in all.
    for index in range(files - 21):
        package = index % 10
        (folder / f"pkg{package}").mkdir(parents=True, exist_ok=True)
        (folder / f"pkg{package}" / "__init__.py").touch()
        (folder / f"pkg{package}" / "helpers.py").write_text(
            "\n".join(f"def helper_{i}(x):\n    return x\n" for i in range(files))
        )
        (folder / f"pkg{package}" / f"mod{index}.py").write_text(
            MODULE.format(package=package, index=index)
        )
    (folder / "main.py").write_text("from pkg0.mod0 import handler_0\n\nentry = handler_0\n")
    (folder / "requirements.txt").write_text("google-cloud-firestore\n")
    return folder


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        folder = build(Path(directory))
        files = sorted(folder.rglob("*.py"))

        def parse_only() -> None:
            for path in files:
                ast.parse(path.read_text())

        report = audit([folder])
        baseline = median_seconds(parse_only)
        audited = median_seconds(lambda: audit([folder]))
    result = {
        "files": report.files,
        "audit_s": audited,
        "parse_only_s": baseline,
        "ratio": audited / baseline,
    }
    print(
        f"audit of {report.files} files: median {audited * 1000:.0f} ms "
        f"(parse only {baseline * 1000:.0f} ms, ratio {audited / baseline:.1f}x; target < 2000 ms); "
        f"{len(report.findings)} findings"
    )
    return result


if __name__ == "__main__":
    main()
