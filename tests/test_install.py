"""phasegate installed on its own: the built wheel and sdist, in fresh environments.

The sdist and the wheel are built once per session (the wheel from the sdist, as
``python -m build`` does). Their dependencies are collected once into a session
wheelhouse with ``pip download`` (pinned to the versions this environment tests, served
from pip's cache when it has them). Each artifact is then installed, with
``--no-index`` from that wheelhouse only, into a new virtual environment outside the
source tree (no editable install), and the commands a new user runs are run there from
a folder that holds nothing of the repository.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

import phasegate
from phasegate.cli import main
from phasegate.errors import ConfigError
from phasegate.packaged import DEMO_EXAMPLE, demo_pipeline, packaged_example
from support import (
    MYSQL_ADMIN_URL,
    MYSQL_HOST,
    MYSQL_PORT,
    PG_ADMIN_URL,
    PG_HOST,
    PG_PORT,
    free_port,
    require_server,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PACKAGED_EXAMPLES = ROOT / "src" / "phasegate" / "examples"
# Building and installing take longer than the suite's 120 s default on busy cores.
INSTALLS = pytest.mark.timeout(300)

# The README's Install section copies the packaged minimal example with this line.
README_COPY_EXAMPLE = "from phasegate.packaged import packaged_example; print(packaged_example('minimal.toml'), end='')"

PIPELINE = """
[pipeline]
name = "orders"

[stores]
primary = "{primary}"
backup = "{backup}"

[triggers]
transport = "log:{folder}/triggers.jsonl"

[[phases]]
name = "extract"
processors = ["api", "files"]
next = "load"

[[phases]]
name = "load"
processors = ["warehouse"]
"""


# -- what ships inside the package ---------------------------------------------------------


def test_the_repositorys_examples_are_the_packaged_ones() -> None:
    """examples/*.toml in the repository are byte-for-byte the copies shipped in the package."""
    repository = {path.name: path.read_bytes() for path in EXAMPLES.glob("*.toml")}
    packaged = {path.name: path.read_bytes() for path in PACKAGED_EXAMPLES.glob("*.toml")}
    assert repository
    assert repository == packaged


def test_the_demo_reads_its_pipeline_from_the_package() -> None:
    """With no --config the demo's pipeline is the packaged NBA example, phase 2 to 6."""
    assert packaged_example(DEMO_EXAMPLE) == (PACKAGED_EXAMPLES / DEMO_EXAMPLE).read_text()
    pipeline = demo_pipeline()
    assert pipeline.name == "nba-props"
    assert [phase.name for phase in pipeline.phases] == [f"phase{n}" for n in range(2, 7)]


def test_the_demo_takes_the_users_pipeline_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--config FILE replaces the packaged example; a one-phase file is refused by name."""
    config = tmp_path / "mine.toml"
    config.write_text(
        PIPELINE.format(primary="sqlite:///a.db", backup="sqlite:///b.db", folder=tmp_path)
    )
    assert demo_pipeline(config).name == "orders"
    single = tmp_path / "single.toml"
    single.write_text('[pipeline]\nname = "one"\n[[phases]]\nname = "a"\nprocessors = ["x"]\n')
    with pytest.raises(ConfigError, match=r"single\.toml: the demo needs .* two phases"):
        demo_pipeline(single)
    assert main(["demo", "--config", str(single)]) == 2
    assert (
        "single.toml: the demo needs a pipeline of at least two phases" in capsys.readouterr().err
    )


def test_the_readme_shows_the_install_commands_tested_here() -> None:
    """The README's Install section holds the very commands the installed tests run."""
    readme = (ROOT / "README.md").read_text()
    install = readme[readme.index("## Install") : readme.index("## The demo")]
    for command in (README_COPY_EXAMPLE, "phasegate demo --runs 2", "phasegate --version"):
        assert command in install, command


# -- building and installing ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Artifacts:
    """The built sdist and wheel, and a folder of wheels for everything they depend on."""

    sdist: Path
    wheel: Path
    wheelhouse: Path


def _run(
    command: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def _hermetic_pip_env() -> dict[str, str]:
    """No pip configuration at all: only the wheelhouse named on the command line counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """Build once per session; collect the dependency wheels once per session."""
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)])
    (sdist,) = dist.glob("phasegate-*.tar.gz")
    (wheel,) = dist.glob("phasegate-*.whl")
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    frozen = _run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"]).stdout
    constraints = wheelhouse.parent / "constraints.txt"
    constraints.write_text(
        "\n".join(line for line in frozen.splitlines() if "==" in line and " @ " not in line)
    )
    _run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
            "--dest", str(wheelhouse), "--constraint", str(constraints),
            f"{wheel}[postgres,mysql]", "hatchling",
        ]
    )  # fmt: skip
    for own in wheelhouse.glob("phasegate-*"):
        own.unlink()
    return Artifacts(sdist=sdist, wheel=wheel, wheelhouse=wheelhouse)


@dataclasses.dataclass(frozen=True, slots=True)
class Installed:
    """A fresh virtual environment holding one installed artifact, and a folder to work in."""

    root: Path
    workdir: Path

    @property
    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
        inherited.pop("VIRTUAL_ENV", None)
        path = f"{self.root / 'bin'}{os.pathsep}{inherited.get('PATH', '')}"
        return inherited | {"PATH": path, "VIRTUAL_ENV": str(self.root), "NO_COLOR": "1"}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the installed ``phasegate`` command with ``args`` in the work folder."""
        return self._run_program("phasegate", args, timeout)

    def python(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the environment's own Python with ``args`` in the work folder."""
        return self._run_program("python", args, 60)

    def _run_program(
        self, program: str, args: tuple[str, ...], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.root / "bin" / program), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def install(artifacts: Artifacts, requirement: str, where: Path) -> Installed:
    """A new venv at ``where`` with ``requirement`` installed from the wheelhouse alone.

    ``--no-compile`` skips writing bytecode for ~40 packages (two thirds of the install's
    time); Python compiles what the commands import, as it would for any user.
    """
    assert ROOT not in where.parents, "the environment must live outside the source tree"
    root, workdir = where / "venv", where / "work"
    workdir.mkdir(parents=True)
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    _run(
        [
            sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install",
            "--quiet", "--no-index", "--find-links", str(artifacts.wheelhouse),
            "--no-compile", requirement,
        ],
        env=_hermetic_pip_env(),
    )  # fmt: skip
    return Installed(root=root, workdir=workdir)


def _sqlite_config(installed: Installed) -> Path:
    folder = installed.workdir
    config = folder / "orders.toml"
    config.write_text(
        PIPELINE.format(
            primary=f"sqlite:///{folder}/primary.db",
            backup=f"sqlite:///{folder}/backup.db",
            folder=folder,
        )
    )
    return config


class _AssetLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


def serving(installed: Installed, config: Path, check: Callable[[str], None]) -> None:
    """Run ``phasegate serve`` on a free loopback port, call ``check(url)``, then stop it."""
    port = free_port()
    log = installed.workdir / f"serve-{port}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [str(installed.root / "bin" / "phasegate"), "serve", "--config", str(config),
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=installed.workdir, env=installed.env, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(url + "/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"serve did not answer:\n{log.read_text()}")
        check(url)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _health_and_offline_docs(url: str) -> None:
    health = httpx.get(url + "/health", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["version"] == phasegate.__version__
    page = httpx.get(url + "/docs", timeout=10)
    assert page.status_code == 200
    assert not re.search(r"https?://", page.text), "/docs names an outside URL"
    parser = _AssetLinks()
    parser.feed(page.text)
    assert len(parser.urls) == 3, parser.urls
    for asset in parser.urls:
        assert asset.startswith("/docs/assets/"), asset
        answer = httpx.get(url + asset, timeout=10)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 1000, asset


# -- the plain install, from the wheel and from the sdist -----------------------------------


@pytest.fixture(scope="module", params=["wheel", "sdist"])
def installed(
    request: pytest.FixtureRequest, artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory
) -> Installed:
    """phasegate alone, installed from the built wheel or the built sdist."""
    artifact = artifacts.wheel if request.param == "wheel" else artifacts.sdist
    return install(artifacts, str(artifact), tmp_path_factory.mktemp(f"from-{request.param}"))


@pytest.mark.slow
@INSTALLS
def test_the_installed_package_is_the_built_one_not_the_source_tree(installed: Installed) -> None:
    """It imports from the venv's site-packages, at version __version__, with every dependency."""
    probe = installed.python(
        "-c",
        "import importlib.metadata as m, phasegate; print(phasegate.__file__); "
        "print(m.version('phasegate')); print(phasegate.__version__)",
    )
    assert probe.returncode == 0, probe.stderr
    location, metadata_version, module_version = probe.stdout.split()
    assert Path(location).is_relative_to(installed.root / "lib")
    assert metadata_version == module_version == phasegate.__version__
    consistent = _run(
        [sys.executable, "-m", "pip", "--python", str(installed.root / "bin" / "python"), "check"],
        env=_hermetic_pip_env(),
    )
    assert "No broken requirements found" in consistent.stdout


@pytest.mark.slow
@INSTALLS
def test_version_and_help_answer(installed: Installed) -> None:
    """``phasegate --version`` names the one version; ``--help`` lists the commands."""
    version = installed.run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"phasegate {phasegate.__version__}"
    usage = installed.run("--help")
    assert usage.returncode == 0, usage.stderr
    for command in ("demo", "complete", "status", "serve", "health", "reconcile"):
        assert command in usage.stdout


@pytest.mark.slow
@INSTALLS
def test_the_demo_runs_from_the_installed_package(installed: Installed) -> None:
    """``phasegate demo --runs 2`` passes every check with nothing of the repository around."""
    demo = installed.run("demo", "--runs", "2")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "nba-props" in demo.stdout
    assert "all checks passed" in demo.stdout


@pytest.mark.slow
@INSTALLS
def test_serve_answers_health_and_offline_docs(installed: Installed) -> None:
    """``phasegate serve`` answers /health with the version and /docs from local assets."""
    serving(installed, _sqlite_config(installed), _health_and_offline_docs)


@pytest.mark.slow
@INSTALLS
def test_the_readme_starts_a_service_from_the_packaged_minimal_example(
    installed: Installed,
) -> None:
    """README's commands: copy the packaged minimal.toml, serve it, ``phasegate health`` says ok."""
    copied = installed.python("-c", README_COPY_EXAMPLE)
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout == (EXAMPLES / "minimal.toml").read_text()
    config = installed.workdir / "phasegate.toml"
    config.write_text(copied.stdout)

    def health_by_command(url: str) -> None:
        probe = installed.run("health", "--url", url)
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert probe.stdout.startswith("healthy (200)")

    serving(installed, config, health_by_command)
    assert (installed.workdir / ".phasegate" / "primary.db").is_file()


# -- the postgres and mysql extras against the local servers ---------------------------------


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://").replace(
            "mysql://", "mysql+pymysql://"
        )
    )


@pytest.fixture
def server_stores() -> Iterator[tuple[str, str, Callable[[], tuple[int, int]]]]:
    """A throwaway PostgreSQL schema and MariaDB database; counts their tables; drops both."""
    require_server("PostgreSQL", PG_HOST, PG_PORT)
    require_server("MariaDB", MYSQL_HOST, MYSQL_PORT)
    name = f"pginstall_{uuid.uuid4().hex[:12]}"
    postgres, mysql = _engine(PG_ADMIN_URL), _engine(MYSQL_ADMIN_URL)
    with mysql.begin() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE `{name}`")

    def tables() -> tuple[int, int]:
        query = "SELECT count(*) FROM information_schema.tables WHERE table_schema = "
        with postgres.connect() as pg, mysql.connect() as my:
            return (
                int(pg.exec_driver_sql(query + "%(n)s", {"n": name}).scalar_one()),
                int(my.exec_driver_sql(query + "%(n)s", {"n": name}).scalar_one()),
            )

    try:
        yield f"{PG_ADMIN_URL}?schema={name}", f"{MYSQL_ADMIN_URL.rsplit('/', 1)[0]}/{name}", tables
    finally:
        with postgres.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        with mysql.begin() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        postgres.dispose()
        mysql.dispose()


@pytest.mark.parametrize("artifact", ["wheel", "sdist"])
@pytest.mark.slow
@INSTALLS
def test_the_postgres_and_mysql_extras_work_against_the_local_servers(
    artifacts: Artifacts,
    tmp_path: Path,
    server_stores: tuple[str, str, Callable[[], tuple[int, int]]],
    artifact: str,
) -> None:
    """With both extras, completions land in PostgreSQL and MariaDB and trigger exactly once."""
    primary, backup, tables = server_stores
    built = artifacts.wheel if artifact == "wheel" else artifacts.sdist
    installed = install(artifacts, f"phasegate[postgres,mysql] @ {built.as_uri()}", tmp_path)
    config = installed.workdir / "phasegate.toml"
    config.write_text(PIPELINE.format(primary=primary, backup=backup, folder=installed.workdir))
    base = ("--config", str(config), "--format", "json")
    results = []
    for processor in ("api", "files"):
        done = installed.run(
            "complete", *base, "--phase", "extract", "--run-key", "2026-01-28",
            "--processor", processor,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        results.append(json.loads(done.stdout))
    assert all(r["primary_ok"] and r["backup_ok"] for r in results), results
    assert [r["claimed"] for r in results] == [False, True]
    assert results[1]["delivery"] == "delivered"
    status = installed.run("status", *base, "2026-01-28")
    assert status.returncode == 0, status.stdout + status.stderr
    phases = json.loads(status.stdout)["runs"][0]["phases"]
    assert [p["phase"] for p in phases if p["state"] == "triggered"] == ["extract"]
    clean = installed.run("reconcile", "--config", str(config))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert all(count > 0 for count in tables()), "the stores' tables are not on the servers"

    def healthy_stores(url: str) -> None:
        body = httpx.get(url + "/health", timeout=10).json()
        assert body["status"] == "healthy", body
        assert body["dependencies"]["primary_store"]["healthy"]
        assert body["dependencies"]["backup_store"]["healthy"]

    serving(installed, config, healthy_stores)
