"""The scrubber belongs to the runtime: secrets masked when embedded, no shared state mutated."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from phasegate.config import ConfigError, loads_pipeline
from phasegate.redact import SCRUBBER, Scrubber
from phasegate.testing import FakeClock
from support import PIPELINE_TEXT, Harness

TOKEN = "tok-abcdefghijklmnop"
READ_TOKEN = "read-qrstuvwxyz012345"
SERVER = f'\n[server]\ntoken = "{TOKEN}"\nread_token = "{READ_TOKEN}"\n'


def test_an_embedded_runtime_masks_its_secrets_in_phasegate_logs(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """No logging set-up by phasegate at all: a record naming the token is still masked."""
    harness = Harness(tmp_path, clock, PIPELINE_TEXT + SERVER)
    try:
        with caplog.at_level(logging.WARNING):
            logging.getLogger("phasegate.orchestrator").warning("token was %s", TOKEN)
            logging.getLogger("phasegate").error("read token %s", READ_TOKEN)
        assert TOKEN not in caplog.text
        assert READ_TOKEN not in caplog.text
        assert caplog.text.count("***") == 2
    finally:
        harness.runtime.close()


def test_opening_a_runtime_leaves_the_default_scrubber_alone(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The module-level default never learns a runtime's secrets; the runtime's own does."""
    harness = Harness(tmp_path, clock, PIPELINE_TEXT + SERVER)
    try:
        assert SCRUBBER.scrub(TOKEN) == TOKEN
        assert harness.runtime.scrubber.scrub(f"x {TOKEN} y") == "x *** y"
    finally:
        harness.runtime.close()


def test_closing_the_runtime_takes_its_filter_off_the_loggers(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """After close() phasegate's loggers carry no filter of that runtime."""
    harness = Harness(tmp_path, clock, PIPELINE_TEXT + SERVER)
    harness.runtime.close()
    with caplog.at_level(logging.WARNING):
        logging.getLogger("phasegate.orchestrator").warning("after close %s", TOKEN)
    assert TOKEN in caplog.text


def test_each_runtime_masks_its_own_secrets(tmp_path: Path, clock: FakeClock) -> None:
    """Two runtimes in one process: each scrubber knows only its own pipeline's secrets."""
    first = Harness(tmp_path / "a", clock, PIPELINE_TEXT + SERVER)
    other = SERVER.replace(TOKEN, "zz-other-token-000000").replace(READ_TOKEN, "zz-read-111111")
    second = Harness(tmp_path / "b", clock, PIPELINE_TEXT + other)
    try:
        assert first.runtime.scrubber.scrub("zz-other-token-000000") == "zz-other-token-000000"
        assert second.runtime.scrubber.scrub(TOKEN) == TOKEN
        assert second.runtime.scrubber.scrub("zz-other-token-000000") == "***"
    finally:
        first.runtime.close()
        second.runtime.close()


def test_secret_shaped_strings_are_masked_by_default() -> None:
    """Before any runtime exists the default still masks webhooks and passwords in URLs."""
    text = Scrubber().scrub("https://hooks.slack.com/services/T1/B2/abc and postgresql://u:pw@h/db")
    assert "abc" not in text
    assert ":pw@" not in text


def test_a_read_token_needs_the_main_token() -> None:
    """``read_token`` alone is refused, naming the key."""
    with pytest.raises(ConfigError, match=r"server\.read_token: needs server\.token"):
        loads_pipeline(PIPELINE_TEXT + f'\n[server]\nread_token = "{READ_TOKEN}"\n')
    pipeline = loads_pipeline(PIPELINE_TEXT + SERVER)
    assert pipeline.server.read_token is not None
    assert pipeline.server.read_token.reveal() == READ_TOKEN
    assert READ_TOKEN not in repr(pipeline.server)
