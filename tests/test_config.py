"""The pipeline file: valid files load into frozen models; every mistake is named."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from phasegate.config import (
    DEFAULT_RUN_KEY_PATTERN,
    Secret,
    TimeoutPolicy,
    find_config_path,
    load_pipeline,
    loads_pipeline,
    parse_duration,
)
from phasegate.errors import ConfigError, ValidationError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

GOOD = """
[pipeline]
name = "p"

[[phases]]
name = "phase2"
processors = ["a", "b"]
next = "phase3"
timeout = "2h"
on_timeout = "trigger"

[[phases]]
name = "phase3"
processors = ["c"]
"""


def test_the_example_pipelines_load() -> None:
    """Both shipped examples are valid; the NBA one runs phase 2 to phase 6 with 3–8 processors."""
    nba = load_pipeline(EXAMPLES / "nba.toml")
    assert [p.name for p in nba.phases] == ["phase2", "phase3", "phase4", "phase5", "phase6"]
    assert all(3 <= len(p.processors) <= 8 for p in nba.phases)
    assert nba.phase("phase4").on_timeout is TimeoutPolicy.TRIGGER
    minimal = load_pipeline(EXAMPLES / "minimal.toml")
    assert minimal.stores.primary.startswith("sqlite:///")
    assert minimal.triggers.transport == "log:"


def test_a_valid_file_becomes_frozen_models_with_defaults() -> None:
    """Values parse into typed, immutable models; unset keys take the documented defaults."""
    pipeline = loads_pipeline(GOOD)
    first = pipeline.phases[0]
    assert first.timeout == timedelta(hours=2)
    assert first.on_timeout is TimeoutPolicy.TRIGGER
    assert pipeline.phases[1].on_timeout is TimeoutPolicy.ALERT
    assert pipeline.run_key_pattern == DEFAULT_RUN_KEY_PATTERN
    assert pipeline.previous("phase3") is first
    assert pipeline.previous("phase2") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.name = "other"  # type: ignore[misc]


def replace_in_good(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


MISTAKES = [
    (
        "duplicate phase",
        GOOD + '\n[[phases]]\nname = "phase2"\nprocessors = ["x"]\n',
        r"phases\[2\]\.name: duplicate phase 'phase2'",
    ),
    (
        "next names an unknown phase",
        replace_in_good('next = "phase3"', 'next = "phase9"'),
        r"phases\[0\]\.next: unknown phase 'phase9' \(known: phase2, phase3\)",
    ),
    (
        "a cycle",
        GOOD + 'next = "phase2"\n',
        r"cycle: phase2 -> phase3 -> phase2; .*every phase has an upstream phase",
    ),
    (
        "a phase triggering itself",
        replace_in_good('next = "phase3"', 'next = "phase2"'),
        "cannot trigger itself",
    ),
    (
        "a processor listed twice",
        replace_in_good('["a", "b"]', '["a", "b", "a"]'),
        r"processors\[2\]: processor 'a' is listed twice",
    ),
    (
        "a bad duration",
        replace_in_good('"2h"', '"2 hours"'),
        r"phases\[0\]\.timeout: bad duration '2 hours'",
    ),
    (
        "a bad regex",
        GOOD.replace('name = "p"', 'name = "p"\nrun_key_pattern = "^(\\\\d+$"'),
        "run_key_pattern: invalid regular expression",
    ),
    (
        "a bad timeout policy",
        replace_in_good('"trigger"', '"explode"'),
        r"on_timeout: 'explode'; expected one of: alert, trigger",
    ),
    (
        "no processors",
        replace_in_good('["c"]', "[]"),
        r"phases\[1\]\.processors: expected a non-empty array",
    ),
    (
        "a misspelt key",
        replace_in_good('processors = ["c"]', 'processors = ["c"]\nproccessors = ["d"]'),
        r"phases\[1\]\.proccessors: unknown key; expected one of",
    ),
    (
        "a missing pipeline name",
        GOOD.replace('name = "p"\n', "", 1),
        r"pipeline\.name: is required",
    ),
    ("processors of the wrong type", replace_in_good('["c"]', '"c"'), "expected a non-empty array"),
    (
        "next lists an unknown phase",
        replace_in_good('next = "phase3"', 'next = ["phase3", "phase9"]'),
        r"phases\[0\]\.next: unknown phase 'phase9' \(known: phase2, phase3\)",
    ),
    (
        "next lists a phase twice",
        replace_in_good('next = "phase3"', 'next = ["phase3", "phase3"]'),
        r"phases\[0\]\.next: phase 'phase3' is listed twice",
    ),
    (
        "next of the wrong type",
        replace_in_good('next = "phase3"', "next = 3"),
        r"phases\[0\]\.next: expected a phase name or an array of phase names, got an integer",
    ),
    (
        "a cycle behind a root",
        GOOD + 'next = "phase4"\n\n[[phases]]\nname = "phase4"\nprocessors = ["x"]\n'
        'next = "phase3"\n',
        r"phases: the 'next' links form a cycle: phase3 -> phase4 -> phase3$",
    ),
    (
        "phases no root reaches",
        GOOD + '\n[[phases]]\nname = "x1"\nprocessors = ["x"]\nnext = "x2"\n'
        '\n[[phases]]\nname = "x2"\nprocessors = ["x"]\nnext = "x1"\n',
        r"cycle: x1 -> x2 -> x1; no root phase reaches x1, x2",
    ),
    (
        "an optional processor also required",
        replace_in_good('["c"]', '["c"]\noptional = ["d", "c"]'),
        r"phases\[1\]\.optional\[1\]: processor 'c' is listed in both processors and optional",
    ),
    (
        "an optional processor listed twice",
        replace_in_good('["c"]', '["c"]\noptional = ["d", "d"]'),
        r"phases\[1\]\.optional\[1\]: processor 'd' is listed twice",
    ),
    (
        "optional of the wrong type",
        replace_in_good('["c"]', '["c"]\noptional = "d"'),
        r"phases\[1\]\.optional: expected an array of processor names",
    ),
    (
        "an unsupported store",
        '[stores]\nprimary = "redis://x"\n' + GOOD,
        r"stores\.primary: unsupported URL scheme 'redis'",
    ),
    (
        "the same store twice",
        '[stores]\nprimary = "sqlite:///a.db"\nbackup = "sqlite:///a.db"\n' + GOOD,
        "must differ from stores.primary",
    ),
    ("a zero timeout", replace_in_good('"2h"', '"0s"'), "must be greater than zero"),
    ("no phases", '[pipeline]\nname = "p"\n', r"phases: is required"),
    ("not TOML at all", "[pipeline\nname=", "not valid TOML"),
    (
        "a bad phase name",
        replace_in_good('name = "phase3"', 'name = "phase 3"'),
        "must be letters, digits",
    ),
    (
        "a bad transport",
        '[triggers]\ntransport = "carrier-pigeon:"\n' + GOOD,
        r"triggers\.transport: unsupported URL scheme",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_a_malformed_pipeline_file_names_the_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Each mistake raises ConfigError naming the file, the key and what was expected."""
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_pipeline(path)
    assert str(info.value).startswith(str(path))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    """Pointing at a file that does not exist says so."""
    with pytest.raises(ConfigError, match="pipeline file not found"):
        load_pipeline(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", 90), ("2h", 7200), ("1h30m", 5400), ("500ms", 0.5), ("1d", 86400), ("1.5h", 5400)],
)
def test_durations(text: str, expected: float) -> None:
    """Durations combine units."""
    assert parse_duration(text).total_seconds() == expected


def test_secrets_come_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``env:`` and ``file:`` resolve; the resolved value never shows in repr."""
    monkeypatch.setenv("PG_TOKEN", "tok-from-env")
    secret_file = tmp_path / "token"
    secret_file.write_text("tok-from-file\n")
    from_env = loads_pipeline('[server]\ntoken = "env:PG_TOKEN"\n' + GOOD)
    from_file = loads_pipeline(f'[server]\ntoken = "file:{secret_file}"\n' + GOOD)
    assert from_env.server.token == Secret("tok-from-env")
    assert from_file.server.token is not None
    assert from_file.server.token.reveal() == "tok-from-file"
    assert "tok-from" not in repr(from_env) + repr(from_file)
    with pytest.raises(ConfigError, match="environment variable NOPE_UNSET is not set"):
        loads_pipeline('[server]\ntoken = "env:NOPE_UNSET"\n' + GOOD)


def test_run_keys_are_validated_against_the_pattern() -> None:
    """A run key that does not match the pattern is rejected naming the field."""
    pipeline = loads_pipeline(GOOD)
    assert pipeline.validate_run_key("2026-01-28") == "2026-01-28"
    for bad in ["2026-1-28", "yesterday", "", "2026-01-28\n", "x" * 200]:
        with pytest.raises(ValidationError) as info:
            pipeline.validate_run_key(bad)
        assert info.value.field == "run_key"


def test_unknown_phases_list_the_known_ones() -> None:
    """Asking for a phase that does not exist names the accepted values."""
    with pytest.raises(ValidationError, match="expected one of: phase2, phase3"):
        loads_pipeline(GOOD).phase("phase7")


def test_the_config_file_is_found_by_flag_then_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--config`` beats ``$PHASEGATE_CONFIG`` beats ``./phasegate.toml``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PHASEGATE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="no pipeline file"):
        find_config_path(None)
    (tmp_path / "phasegate.toml").write_text(GOOD)
    assert find_config_path(None) == tmp_path / "phasegate.toml"
    monkeypatch.setenv("PHASEGATE_CONFIG", "/etc/from-env.toml")
    assert find_config_path(None) == Path("/etc/from-env.toml")
    assert find_config_path("given.toml") == Path("given.toml")


DIAMOND = """
[pipeline]
name = "diamond"

[[phases]]
name = "a"
processors = ["extract"]
next = ["b", "c"]

[[phases]]
name = "b"
processors = ["clean"]
next = "d"

[[phases]]
name = "c"
processors = ["enrich"]
optional = ["audit_log"]
next = "d"

[[phases]]
name = "d"
processors = ["publish"]
"""


def test_a_diamond_pipeline_loads_as_a_graph() -> None:
    """``next`` may list several phases; fan-in is allowed; the graph answers who feeds whom."""
    pipeline = loads_pipeline(DIAMOND)
    assert pipeline.phase("a").next_phases == ("b", "c")
    assert pipeline.phase("a").next == "b"
    assert pipeline.phase("d").next is None
    assert pipeline.roots() == ("a",)
    assert pipeline.downstream("a") == ("b", "c")
    assert pipeline.upstream("d") == ("b", "c")
    assert pipeline.upstream("a") == ()
    assert pipeline.descendants("a") == ("b", "c", "d")
    assert pipeline.descendants("c") == ("d",)
    assert pipeline.previous("d") is pipeline.phase("b")


def test_optional_processors_are_kept_apart_from_required_ones() -> None:
    """``optional`` lists processors the phase does not wait for; ``processors`` are required."""
    phase = loads_pipeline(DIAMOND).phase("c")
    assert phase.required == phase.processors == ("enrich",)
    assert phase.optional == ("audit_log",)
    assert phase.all_processors == ("enrich", "audit_log")


def test_graph_questions_about_unknown_phases_list_the_known_ones() -> None:
    """Asking the graph about a phase that does not exist is a ValidationError naming the field."""
    with pytest.raises(ValidationError, match="expected one of: a, b, c, d"):
        loads_pipeline(DIAMOND).upstream("z")


def test_an_empty_next_list_ends_the_pipeline() -> None:
    """``next = []`` is the same as no ``next``: the phase is a leaf."""
    pipeline = loads_pipeline(replace_in_good('next = "phase3"', "next = []"))
    assert pipeline.phase("phase2").next_phases == ()
    assert pipeline.roots() == ("phase2", "phase3")
