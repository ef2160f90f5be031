"""Distribution -> module names, the shipped mapping and its generator, and [audit] settings."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from phasegate.audit import (
    AuditSettings,
    ProvidesIndex,
    audit,
    load_settings,
    modules_from_files,
    read_requirements,
)
from phasegate.audit.names import installed_info, satisfied, shipped_mapping
from phasegate.cli import main
from phasegate.config import parse_pipeline

ROOT = Path(__file__).resolve().parents[2]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts/gen_audit_provides.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_audit_provides"] = module
    spec.loader.exec_module(module)
    return module


def test_record_files_give_the_outermost_packages_below_namespaces() -> None:
    """``google/cloud/x/__init__.py`` provides google.cloud.x; top modules and extensions too."""
    record = [
        "google/cloud/translate_v2/__init__.py",
        "google/cloud/translate_v2/client.py",
        "google/cloud/translate/__init__.py",
        "six.py",
        "_cffi_backend.cpython-311-x86_64-linux-gnu.so",
        "yaml/__init__.py",
        "yaml/_yaml.cpython-311-x86_64-linux-gnu.so",
        "PyYAML-6.0.dist-info/RECORD",
        "../../bin/cli",
        "pkg/__pycache__/x.cpython-311.pyc",
    ]
    assert modules_from_files(record) == {
        "google.cloud.translate_v2",
        "google.cloud.translate",
        "six",
        "_cffi_backend",
        "yaml",
    }


def test_the_shipped_mapping_covers_renamed_distributions() -> None:
    """Slack SDKs, google-events, translate_v2 and the common PyPI renames resolve offline."""
    index = ProvidesIndex(use_installed=False)
    expected = {
        "slackclient": "slack",
        "slack_sdk": "slack_sdk",
        "google-events": "google.events.cloud.firestore",
        "google-cloud-translate": "google.cloud.translate_v2",
        "google-cloud-firestore": "google.cloud.firestore",
        "functions-framework": "functions_framework",
        "PyYAML": "yaml",
        "Pillow": "PIL",
        "beautifulsoup4": "bs4",
        "python-dateutil": "dateutil",
        "scikit-learn": "sklearn",
        "opencv-python": "cv2",
        "protobuf": "google.protobuf",
        "google-api-python-client": "googleapiclient",
    }
    for distribution, module in expected.items():
        info = index.info(distribution)
        assert module in info.modules, distribution
        assert info.source == "mapping"
    assert index.info("some-unknown-dist").modules == ("some_unknown_dist",)
    assert index.info("google-cloud-made-up").modules == ("google.cloud.made_up",)


def test_installed_metadata_answers_first() -> None:
    """An installed distribution (slack_sdk is a phasegate dependency) is read from RECORD."""
    info = ProvidesIndex().info("slack-sdk")
    assert info.source == "installed"
    assert "slack_sdk" in info.modules
    assert installed_info("surely-not-installed-dist") is None


def test_dependency_metadata_says_what_a_declared_distribution_brings() -> None:
    """functions-framework brings Flask, Werkzeug and cloudevents; clients bring api_core."""
    index = ProvidesIndex(use_installed=False)
    brought = index.brought_by(["functions-framework", "google-cloud-bigquery"])
    assert brought["flask"] == "functions-framework"
    assert brought["werkzeug"] == "functions-framework"
    assert brought["markupsafe"] == "functions-framework"
    assert brought["cloudevents"] == "functions-framework"
    assert brought["google-api-core"] == "google-cloud-bigquery"
    assert "functions-framework" not in brought


def test_user_provides_add_a_mapping(tmp_path: Path) -> None:
    """``provides = {"my-dist" = ["mymod"]}`` turns a false missing-requirement into nothing."""
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "main.py").write_text("import mymod\n\nmymod.run()\n")
    (folder / "requirements.txt").write_text("my-dist==1.0\n")
    assert [f.kind for f in audit([folder]).findings] == ["missing-requirement"]
    assert audit([folder], provides={"My_Dist": ["mymod"]}).findings == []
    info = ProvidesIndex({"my-dist": ["mymod"]}).info("my.dist")
    assert (info.modules, info.source) == (("my_dist", "mymod"), "config")


def test_requirement_files_follow_includes(tmp_path: Path) -> None:
    """``-r requirements.txt`` in requirements-test.txt is followed, cycles once."""
    (tmp_path / "requirements.txt").write_text("flask\n-r requirements-test.txt\n")
    (tmp_path / "requirements-test.txt").write_text("--requirement=requirements.txt\npytest\n")
    assert read_requirements(tmp_path / "requirements-test.txt") == {"flask", "pytest"}


def test_the_generator_reads_metadata_when_installed_and_curated_entries_otherwise() -> None:
    """Installed distributions come from their metadata; the rest from the curated table."""
    generator = load_generator()
    document = json.loads(generator.render())
    entries = document["distributions"]
    assert entries["slack-sdk"]["source"] == "metadata"
    assert entries["wand"] == {"modules": ["wand"], "requires": [], "source": "curated"}
    shipped = shipped_mapping()
    assert set(entries) == set(shipped)
    for name, entry in entries.items():
        # Read here or shipped, an entry names the same distribution: they share import
        # roots (a release installed here may add or drop modules the shipped file lists,
        # and one may list a namespace's packages where the other names the namespace).
        mine, theirs = entry["modules"], shipped[name].modules
        assert any(satisfied(module, theirs) for module in mine), name
        assert any(satisfied(module, mine) for module in theirs), name


def test_settings_come_from_pyproject_and_the_pipeline_file(tmp_path: Path) -> None:
    """[tool.phasegate.audit] in the repository, then [audit] in --config; paths are relative."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.phasegate.audit]
            provides = {"my-dist" = ["mymod"]}
            bundled = ["shared"]
            """
        )
    )
    (tmp_path / "functions").mkdir()
    config = tmp_path / "ops" / "phasegate.toml"
    config.parent.mkdir()
    config.write_text('[audit]\nstrict = true\nprovides = {"other" = ["o"]}\n')
    settings = load_settings(config, [tmp_path / "functions"])
    assert settings == AuditSettings(
        {"my-dist": ("mymod",), "other": ("o",)}, True, (tmp_path / "shared",)
    )
    assert load_settings(None, [tmp_path / "functions"]).strict is False


def test_a_malformed_audit_table_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unknown keys and wrong types name the file and the key; the CLI exits 2."""
    config = tmp_path / "phasegate.toml"
    config.write_text('[audit]\nprovide = {"a" = ["b"]}\n')
    with pytest.raises(ValueError, match=r"phasegate.toml \[audit\]: unknown key 'provide'"):
        load_settings(config, [tmp_path])
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "main.py").write_text("X = 1\n")
    config.write_text('[audit]\nprovides = {"a" = "b"}\n')
    assert main(["audit", str(tmp_path / "fn"), "--config", str(config)]) == 2
    assert "provides must map a distribution to a list of modules" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "fn"), "--config", str(tmp_path / "none.toml")]) == 2


def test_the_pipeline_file_accepts_an_audit_table() -> None:
    """One phasegate.toml can hold the pipeline and the audit settings."""
    data = tomllib.loads(
        '[pipeline]\nname = "p"\n[[phases]]\nname = "a"\nprocessors = ["x"]\n'
        '[audit]\nprovides = {"my-dist" = ["mymod"]}\n'
    )
    assert parse_pipeline(data).name == "p"


def test_gcloudignore_includes_and_test_files_without_test_requirements(tmp_path: Path) -> None:
    """``#!include:.gitignore`` is followed; tests without requirements-test are names-only."""
    folder = tmp_path / "fn"
    (folder / "local").mkdir(parents=True)
    (folder / "tests").mkdir()
    (folder / "main.py").write_text("def handler(request):\n    return 'ok'\n")
    (folder / "local" / "try_it.py").write_text(
        "import pandas\n\nP = '/home/me/x.csv'\npandas.read_csv(P)\n"
    )
    (folder / ".gcloudignore").write_text("#!include:.gitignore\n")
    (folder / ".gitignore").write_text("local/\n")
    (folder / "tests" / "test_main.py").write_text(
        "import responses\n\nimport main\n\n\n@responses.activate\ndef test_ok():\n"
        "    assert main.handler(None) == answer\n"
    )
    report = audit([folder])
    assert [(f.path, f.kind) for f in report.findings] == [("tests/test_main.py", "undefined-name")]
    assert report.files == 2
