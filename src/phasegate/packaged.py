"""What ships inside the package and commands read at run time: the example pipelines
(``phasegate/examples/*.toml``), read with :mod:`importlib.resources`, never from a
source tree."""

from __future__ import annotations

import os
from importlib import resources

from phasegate.config import Pipeline, load_pipeline, loads_pipeline
from phasegate.errors import ConfigError

__all__ = ["DEMO_EXAMPLE", "demo_pipeline", "packaged_example"]

DEMO_EXAMPLE = "nba.toml"


def packaged_example(name: str) -> str:
    """The text of an example pipeline shipped inside the package (``phasegate/examples/``)."""
    return (resources.files("phasegate") / "examples" / name).read_text(encoding="utf-8")


def demo_pipeline(config: str | os.PathLike[str] | None = None) -> Pipeline:
    """The demo's pipeline: the user's file when given, else the packaged NBA example."""
    if config is not None:
        pipeline = load_pipeline(config)
    else:
        source = f"<packaged example {DEMO_EXAMPLE}>"
        pipeline = loads_pipeline(packaged_example(DEMO_EXAMPLE), source)
    if len(pipeline.phases) < 2:
        where = config if config is not None else DEMO_EXAMPLE
        raise ConfigError(f"{where}: the demo needs a pipeline of at least two phases")
    return pipeline
