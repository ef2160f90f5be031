"""The audit: one defect of each kind is found, clean folders pass, ignores work."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from phasegate.audit import audit, import_names, read_requirements
from phasegate.cli import main


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


CLEAN = {
    "main.py": """
        import json
        import logging

        from google.cloud import firestore
        import yaml

        from helpers.format import pretty
        from . import settings

        try:
            import ujson as fastjson
        except ImportError:
            fastjson = None


        def handler(request):
            db = firestore.Client()
            logging.info(pretty(json.dumps(yaml.safe_load("a: 1"))))
            return {"ts": firestore.SERVER_TIMESTAMP, "fast": fastjson, "s": settings}
        """,
    "settings.py": "NAME = 'x'\n",
    "helpers/__init__.py": "from helpers.format import pretty\n",
    "helpers/format.py": "def pretty(text):\n    return text.strip()\n",
    "requirements.txt": """
        # runtime
        google-cloud-firestore==2.16.0
        PyYAML>=6 ; python_version >= "3.8"
        ujson
        functions-framework==3.*
        """,
}


def kinds(findings: list) -> list[tuple[str, str, int]]:
    return [(f.kind, f.path, f.line) for f in findings]


def test_a_clean_folder_has_no_findings(tmp_path: Path) -> None:
    """Namespace packages, nested local packages, relative and conditional imports are fine."""
    write(tmp_path / "fn", CLEAN)
    report = audit([tmp_path])
    assert report.findings == []
    assert report.folders == [(tmp_path / "fn").as_posix()]
    assert report.files == 4


@pytest.mark.parametrize(
    ("files", "expected", "fragment"),
    [
        (
            {"main.py": "def f():\n    return firestore.SERVER_TIMESTAMP\n"},
            ("undefined-name", "main.py", 2),
            "'firestore' is used but never defined",
        ),
        (
            {"main.py": "import os\nimport os\nos.getcwd()\n"},
            ("duplicate-import", "main.py", 2),
            "first on line 1",
        ),
        (
            {"main.py": "import os\n"},
            ("unused-import", "main.py", 1),
            "'os' is imported but unused",
        ),
        (
            {"main.py": "PATH = '/home/alice/keys/sa.json'\nURL = 'https://example.com/home/x'\n"},
            ("absolute-path", "main.py", 1),
            "'/home/alice/keys/sa.json'",
        ),
        (
            {"main.py": "P = r'C:\\\\Users\\\\bob\\\\data.csv'\n"},
            ("absolute-path", "main.py", 1),
            "C:",
        ),
        (
            {"main.py": "import requests\nrequests.get('x')\n", "requirements.txt": "flask\n"},
            ("missing-requirement", "main.py", 1),
            "'requests' is imported but no distribution in requirements.txt provides it",
        ),
        (
            {
                "main.py": "from google.cloud import bigquery\nbigquery.Client()\n",
                "requirements.txt": "google-cloud-firestore\n",
            },
            ("missing-requirement", "main.py", 1),
            "'google.cloud.bigquery'",
        ),
        ({"main.py": "def broken(:\n    pass\n"}, ("syntax-error", "main.py", 1), "invalid syntax"),
    ],
    ids=[
        "undefined",
        "duplicate",
        "unused",
        "posix-path",
        "windows-path",
        "missing-req",
        "namespace-req",
        "syntax",
    ],
)
def test_each_kind_of_defect_is_found(
    tmp_path: Path, files: dict[str, str], expected: tuple[str, str, int], fragment: str
) -> None:
    """A folder with one defect reports exactly that defect, at its line."""
    write(tmp_path / "fn", files)
    report = audit([tmp_path])
    assert kinds(report.findings) == [expected]
    assert fragment in report.findings[0].message


def test_symlinks_are_reported_with_their_target(tmp_path: Path) -> None:
    """A symlinked file or folder inside a function breaks the upload."""
    folder = write(tmp_path / "fn", {"main.py": "X = 1\n"})
    write(tmp_path, {"shared_cfg.py": "Y = 2\n"})
    os.symlink(tmp_path / "shared_cfg.py", folder / "cfg.py")
    os.symlink(tmp_path, folder / "linked_dir")
    report = audit([folder])
    found = {(f.kind, f.path) for f in report.findings}
    assert found == {("symlink", "cfg.py"), ("symlink", "linked_dir")}
    assert any(str(tmp_path / "shared_cfg.py") in f.message for f in report.findings)


def test_a_local_package_not_shipped_with_the_function_is_found(tmp_path: Path) -> None:
    """``import shared`` from a function whose folder lacks ``shared/`` is unshipped."""
    (tmp_path / ".git").mkdir()
    write(tmp_path, {"shared/__init__.py": "", "shared/util.py": "def f():\n    return 1\n"})
    write(tmp_path / "functions" / "p2", {"main.py": "from shared.util import f\nf()\n"})
    write(
        tmp_path / "functions" / "p3",
        {
            "main.py": "from shared.util import f\nf()\n",
            "shared/__init__.py": "",
            "shared/util.py": "def f():\n    return 1\n",
        },
    )
    report = audit([tmp_path / "functions"])
    assert kinds(report.findings) == [("unshipped-import", "main.py", 1)]
    assert report.findings[0].folder.endswith("functions/p2")
    assert "use --bundled if the deploy copies it in" in report.findings[0].message


def test_a_bundled_package_counts_as_shipped(tmp_path: Path) -> None:
    """``--bundled shared`` (alias ``--shared``): the deploy copies it in, so the import ships."""
    (tmp_path / ".git").mkdir()
    write(tmp_path, {"shared/__init__.py": "", "shared/util.py": "def f():\n    return 1\n"})
    write(tmp_path / "functions" / "p2", {"main.py": "from shared.util import f\nf()\n"})
    bundled = audit([tmp_path / "functions"], bundled=[tmp_path / "shared"])
    assert bundled.findings == []
    assert bundled.folders == [
        (tmp_path / "shared").as_posix(),
        (tmp_path / "functions/p2").as_posix(),
    ]
    assert audit([tmp_path / "functions"], shared=[tmp_path / "shared"]).findings == []


def test_star_imports_nested_packages_and_ignore_comments(tmp_path: Path) -> None:
    """``from x import *`` is not an undefined name; ``# phasegate: ignore[kind]`` silences one line."""
    write(
        tmp_path / "fn",
        {
            "main.py": """
                from helpers import *
                import os  # phasegate: ignore[unused-import]
                import sys  # phasegate: ignore[absolute-path]
                DATA = "/var/data/x.csv"  # phasegate: ignore
                print(pretty)
                """,
            "helpers/__init__.py": "def pretty():\n    return 1\n",
        },
    )
    report = audit([tmp_path])
    assert kinds(report.findings) == [("unused-import", "main.py", 3)]


def test_the_cli_prints_text_or_json_and_sets_the_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text groups by folder with file:line; JSON has findings and summary; exit 1 / 0 / 2."""
    write(tmp_path / "bad", {"main.py": "def f():\n    return firestore.SERVER_TIMESTAMP\n"})
    write(tmp_path / "good", CLEAN)
    assert main(["audit", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{(tmp_path / 'bad').as_posix()}: 1 finding(s)" in out
    assert "  main.py:2: undefined-name: 'firestore' is used but never defined or imported" in out
    assert f"{(tmp_path / 'good').as_posix()}: ok" in out
    assert main(["audit", str(tmp_path), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["summary"] == {
        "folders": 2,
        "files": 5,
        "findings": 1,
        "by_kind": {"undefined-name": 1},
    }
    assert data["findings"][0] == {
        "folder": (tmp_path / "bad").as_posix(),
        "path": "main.py",
        "line": 2,
        "kind": "undefined-name",
        "message": "'firestore' is used but never defined or imported",
    }
    assert main(["audit", str(tmp_path / "good")]) == 0
    assert main(["audit", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["audit", str(tmp_path / "empty")]) == 2


def test_requirements_parsing_and_import_names(tmp_path: Path) -> None:
    """Versions, markers, extras, options and comments are ignored; names map to imports."""
    (tmp_path / "requirements.txt").write_text(
        "-r base.txt\n--index-url https://x\nRequests[socks]==2.31 # http\nbeautifulsoup4\n"
        "google-cloud-pubsub ; python_version>'3'\ngit+https://host/repo.git#egg=My_Pkg\n"
    )
    assert read_requirements(tmp_path / "requirements.txt") == {
        "requests",
        "beautifulsoup4",
        "google-cloud-pubsub",
        "my-pkg",
    }
    assert "yaml" in import_names("PyYAML")
    assert {"google.cloud.firestore", "google.cloud.firestore_v1"} <= set(
        import_names("google-cloud-firestore")
    )
    assert import_names("google-cloud-dataplex") == ("google.cloud.dataplex",)
    assert import_names("my_pkg") == ("my_pkg",)


def test_a_bundled_package_with_its_own_requirements_is_checked_once(tmp_path: Path) -> None:
    """With ``shared/requirements.txt`` its imports are checked there, not in each function."""
    write(
        tmp_path / "shared",
        {
            "__init__.py": "",
            "db.py": "import pymongo\nfrom google.cloud import firestore\n\nC = (pymongo, firestore)\n",
            "requirements.txt": "google-cloud-firestore\n",
        },
    )
    for name in ("p2", "p3"):
        write(tmp_path / "functions" / name, {"main.py": "from shared.db import C\n\nX = C\n"})
    report = audit([tmp_path / "functions"], bundled=[tmp_path / "shared"])
    assert [(Path(f.folder).name, f.path, f.kind) for f in report.findings] == [
        ("shared", "db.py", "missing-requirement")
    ]
    (tmp_path / "shared" / "requirements.txt").unlink()
    per_function = audit([tmp_path / "functions"], bundled=[tmp_path / "shared"])
    assert [(Path(f.folder).name, f.line, f.kind) for f in per_function.findings] == [
        ("p2", 1, "missing-requirement"),
        ("p2", 1, "missing-requirement"),
        ("p3", 1, "missing-requirement"),
        ("p3", 1, "missing-requirement"),
    ]
    assert (
        "'google.cloud' (imported by bundled shared/db.py:2" not in per_function.findings[1].message
    )
    assert (
        "'google.cloud.firestore' (imported by bundled shared/db.py:2"
        in per_function.findings[1].message
    )


def test_what_gcloudignore_leaves_out_is_not_judged_as_shipped(tmp_path: Path) -> None:
    """An ignored symlink or script is not uploaded, so it is not reported."""
    folder = write(
        tmp_path / "fn",
        {
            "main.py": "X = 1\n",
            "dev/seed.py": "import pandas\nP = '/Users/me/seed.csv'\n",
            ".gcloudignore": "dev/\nlinked\n",
        },
    )
    os.symlink(tmp_path, folder / "linked")
    assert audit([folder]).findings == []
    (folder / ".gcloudignore").write_text("")
    assert {f.kind for f in audit([folder]).findings} == {
        "symlink",
        "absolute-path",
        "missing-requirement",
        "unused-import",
    }


def test_without_gcloudignore_the_gcloud_default_applies(tmp_path: Path) -> None:
    """With a ``.gitignore`` and no ``.gcloudignore``, gcloud's default leaves gitignored files out."""
    folder = write(
        tmp_path / "fn",
        {"main.py": "X = 1\n", "scratch/try.py": "P = '/home/me/x'\n", ".gitignore": "scratch/\n"},
    )
    assert audit([folder]).findings == []
    (folder / ".gitignore").unlink()
    assert [(f.path, f.kind) for f in audit([folder]).findings] == [
        ("scratch/try.py", "absolute-path")
    ]
