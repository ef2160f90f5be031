"""Precision: real-world-shaped function folders audit clean; every planted defect is found."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from phasegate.audit import KINDS, audit
from phasegate.audit.report import AuditReport
from phasegate.cli import main

CORPUS = Path(__file__).parent / "corpus"

# What --strict adds on the clean corpus: imports that arrive only as dependencies.
TRANSITIVE = [
    ("bq_loader", "main.py", 6, "'google.api_core' comes only with 'google-api-core'"),
    ("firestore_reactive", "main.py", 2, "'cloudevents.http' comes only with 'cloudevents'"),
    ("helloworld_http", "main.py", 2, "'markupsafe' comes only with 'markupsafe'"),
    ("helloworld_http", "main_test.py", 3, "declare it in requirements-test.txt"),
    ("helloworld_pubsub", "main.py", 4, "which 'functions-framework' requires"),
    ("helloworld_pubsub", "main_test.py", 3, "'cloudevents.http'"),
    ("secrets", "main.py", 4, "'google.auth' comes only with 'google-auth'"),
    ("slack", "main.py", 5, "'flask' comes only with 'flask'"),
    ("tips_retry", "main.py", 5, "'werkzeug.exceptions' comes only with 'werkzeug'"),
]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the corpus as a repository of its own."""
    root = tmp_path / "repo"
    shutil.copytree(CORPUS, root)
    (root / ".git").mkdir()
    return root


def run(repo: Path, *, strict: bool = False, use_installed: bool = True) -> AuditReport:
    return audit(
        [repo / "functions"],
        bundled=[repo / "shared"],
        strict=strict,
        use_installed=use_installed,
    )


def found(report: AuditReport) -> list[tuple[str, str, int, str]]:
    return [(Path(f.folder).name, f.path, f.line, f.kind) for f in report.findings]


@pytest.mark.parametrize("use_installed", [True, False], ids=["metadata", "shipped-mapping"])
def test_the_corpus_audits_clean(repo: Path, use_installed: bool) -> None:
    """Tests, renamed distributions, dependencies' imports, a `slack/` sibling: no finding."""
    report = run(repo, use_installed=use_installed)
    assert report.findings == []
    assert len(report.folders) == 15
    assert report.files == 28


@pytest.mark.parametrize("use_installed", [True, False], ids=["metadata", "shipped-mapping"])
def test_strict_reports_exactly_the_imports_that_come_with_a_dependency(
    repo: Path, use_installed: bool
) -> None:
    """``--strict`` adds `transitive-import` for flask, werkzeug, cloudevents, google.api_core..."""
    report = run(repo, strict=True, use_installed=use_installed)
    assert found(report) == [(f, p, n, "transitive-import") for f, p, n, _ in TRANSITIVE]
    for finding, (*_, fragment) in zip(report.findings, TRANSITIVE, strict=True):
        assert fragment in finding.message


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def plant_undefined(repo: Path) -> None:
    edit(
        repo / "functions/helloworld_pubsub/main.py", "import base64\n", "import base64\n\nX = db\n"
    )


def plant_undefined_in_a_test(repo: Path) -> None:
    edit(
        repo / "functions/bq_loader/tests/test_schema.py",
        "table_schema()]",
        "table_schema()] + extra_columns",
    )


def plant_duplicate(repo: Path) -> None:
    edit(repo / "functions/tips_retry/main.py", "import os\n", "import os\nimport os\n")


def plant_unused(repo: Path) -> None:
    edit(repo / "functions/image_tools/main.py", "import io\n", "import io\nimport json\n")


def plant_symlink(repo: Path) -> None:
    os.symlink(repo / "shared" / "names.py", repo / "functions/billing/names.py")


def plant_absolute_path(repo: Path) -> None:
    edit(repo / "functions/thumbnail/.gcloudignore", "scripts/\n", "")


def plant_missing(repo: Path) -> None:
    edit(repo / "functions/bq_loader/requirements.txt", "PyYAML==6.0.1\n", "")


def plant_missing_test_requirement(repo: Path) -> None:
    edit(
        repo / "functions/helloworld_http/main_test.py",
        "import flask\n",
        "import flask\nimport freezegun\n",
    )
    edit(
        repo / "functions/helloworld_http/main_test.py",
        "def test_mock_request():",
        "@freezegun.freeze_time('2024-01-01')\ndef test_mock_request():",
    )


def plant_missing_for_bundled(repo: Path) -> None:
    edit(repo / "functions/phase3_to_phase4/requirements.txt", "slack-sdk==3.27.1\n", "")


def plant_unshipped_sibling(repo: Path) -> None:
    (repo / "functions/slack/__init__.py").write_text("")
    edit(repo / "functions/billing/requirements.txt", "slackclient==2.9.4\n", "")


def plant_unshipped_ignored(repo: Path) -> None:
    (repo / "functions/bq_loader/.gcloudignore").write_text("loader/\ntests/\n")


def plant_syntax_error(repo: Path) -> None:
    edit(repo / "functions/image_tools/main.py", "import io\n", "import io\ndef broken(:\n")


PLANTED: list[tuple[Callable[[Path], None], bool, list[tuple[str, str, int, str]], str]] = [
    (plant_undefined, False, [("helloworld_pubsub", "main.py", 3, "undefined-name")], "'db'"),
    (
        plant_undefined_in_a_test,
        False,
        [("bq_loader", "tests/test_schema.py", 5, "undefined-name")],
        "'extra_columns'",
    ),
    (plant_duplicate, False, [("tips_retry", "main.py", 2, "duplicate-import")], "line 1"),
    (plant_unused, False, [("image_tools", "main.py", 2, "unused-import")], "'json'"),
    (plant_symlink, False, [("billing", "names.py", 0, "symlink")], "shared/names.py"),
    (
        plant_absolute_path,
        False,
        [("thumbnail", "scripts/run_local.py", 5, "absolute-path")],
        "/home/developer",
    ),
    (
        plant_missing,
        False,
        [("bq_loader", "main.py", 4, "missing-requirement")],
        "'yaml' is imported but no distribution in requirements.txt provides it",
    ),
    (
        plant_missing_test_requirement,
        False,
        [("helloworld_http", "main_test.py", 4, "missing-requirement")],
        "'freezegun' is imported but no distribution in requirements-test.txt provides it",
    ),
    (
        plant_missing_for_bundled,
        False,
        [("phase3_to_phase4", "main.py", 5, "missing-requirement")],
        "'slack_sdk.webhook' (imported by bundled shared/notify.py:3",
    ),
    (
        plant_unshipped_sibling,
        False,
        [("billing", "main.py", 5, "unshipped-import")],
        "local package 'slack'",
    ),
    (
        plant_unshipped_ignored,
        False,
        [("bq_loader", "main.py", 9, "unshipped-import")],
        "excluded by .gcloudignore",
    ),
    (plant_syntax_error, False, [("image_tools", "main.py", 2, "syntax-error")], "invalid syntax"),
]


@pytest.mark.parametrize(
    ("plant", "strict", "expected", "fragment"),
    PLANTED,
    ids=[plant.__name__.removeprefix("plant_") for plant, *_ in PLANTED],
)
def test_a_planted_defect_is_found_in_the_corpus(
    repo: Path,
    plant: Callable[[Path], None],
    strict: bool,
    expected: list[tuple[str, str, int, str]],
    fragment: str,
) -> None:
    """One defect planted in a clean corpus is reported alone, at its line."""
    plant(repo)
    report = run(repo, strict=strict)
    assert found(report) == expected
    assert fragment in report.findings[0].message


def test_every_finding_kind_has_a_planted_instance() -> None:
    """The planted list plus --strict covers every kind the audit reports."""
    planted = {kind for _, _, expected, _ in PLANTED for *_, kind in expected}
    assert planted | {"transitive-import"} == set(KINDS)


def test_without_bundled_the_shared_imports_are_unshipped(repo: Path) -> None:
    """Forgetting ``--bundled shared`` reports each function importing it, once."""
    report = audit([repo / "functions"])
    assert found(report) == [
        ("phase2_to_phase3", "main.py", 4, "unshipped-import"),
        ("phase3_to_phase4", "main.py", 4, "unshipped-import"),
    ]


def test_the_cli_gates_the_corpus(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 0 with --bundled or its alias --shared; 1 with --strict or a [audit] strict config."""
    functions, shared = str(repo / "functions"), str(repo / "shared")
    assert main(["audit", functions, "--bundled", shared]) == 0
    assert main(["audit", functions, "--shared", shared]) == 0
    assert "15 folder(s), 28 file(s), 0 finding(s)" in capsys.readouterr().out
    assert main(["audit", functions, "--shared", shared, "--strict"]) == 1
    assert f"transitive-import {len(TRANSITIVE)}" in capsys.readouterr().out
    config = repo / "phasegate.toml"
    config.write_text('[audit]\nstrict = true\nbundled = ["shared"]\n')
    assert main(["audit", functions, "--config", str(config)]) == 1
    assert f"transitive-import {len(TRANSITIVE)}" in capsys.readouterr().out
