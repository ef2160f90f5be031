"""``phasegate serve --workers N``: several processes on PostgreSQL, metrics that add up,
SIGTERM stopping them all, connections spread over the workers, and a refusal on SQLite."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from phasegate.cli import main
from phasegate.service import workers
from phasegate.service.workers import bind, bind_workers, spreads_connections
from store_databases import _postgres_schema
from support import PG_HOST, PG_PORT, free_port, require_server

CONFIG = """
[pipeline]
name = "orders"
run_key_pattern = "^r[0-9]+$"

[stores]
primary = "{primary}"
backup = "{backup}"

[triggers]
transport = "log:{dir}/triggers.jsonl"

[[phases]]
name = "extract"
processors = ["api", "db"]
"""


@pytest.fixture
def pg_stores() -> Iterator[tuple[str, str]]:
    """Two throwaway PostgreSQL schemas, dropped afterwards."""
    require_server("PostgreSQL", PG_HOST, PG_PORT)
    primary, drop_primary = _postgres_schema()
    backup, drop_backup = _postgres_schema()
    yield primary, backup
    drop_primary()
    drop_backup()


def _launch(
    tmp_path: Path, primary: str, backup: str, workers: int
) -> tuple[subprocess.Popen[bytes], str]:
    """``phasegate serve --workers`` started, not waited for; logs in ``serve.log``."""
    config = tmp_path / "phasegate.toml"
    config.write_text(CONFIG.format(primary=primary, backup=backup, dir=tmp_path))
    port = free_port()
    with (tmp_path / "serve.log").open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "phasegate.cli",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    return process, f"http://127.0.0.1:{port}"


def _start(
    tmp_path: Path, primary: str, backup: str, workers: int
) -> tuple[subprocess.Popen[bytes], str]:
    process, url = _launch(tmp_path, primary, backup, workers)
    for _ in range(600):
        try:
            if httpx.get(url + "/livez", timeout=0.5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError((tmp_path / "serve.log").read_text() or "did not start")


def _recorded_total(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("phasegate_completions_total{") and 'outcome="recorded"' in line
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_answer_completions_sum_metrics_and_stop_on_sigterm(
    tmp_path: Path, pg_stores: tuple[str, str]
) -> None:
    """Both worker processes record completions; /metrics totals every worker's; SIGTERM exits 0."""
    process, url = _start(tmp_path, *pg_stores, workers=2)
    try:
        pids: set[str] = set()
        sent = 0
        while sent < 400 and (len(pids) < 2 or sent < 40):
            # a fresh connection each time: the kernel hands it to whichever worker accepts
            response = httpx.post(
                url + "/v1/completions",
                json={
                    "phase": "extract",
                    "run_key": f"r{sent // 2}",
                    "processor": ("api", "db")[sent % 2],
                },
                headers={"Connection": "close"},
            )
            assert response.status_code == 202, response.text
            pids.add(response.headers["X-Phasegate-Worker"])
            sent += 1
        assert len(pids) == 2, f"only worker {pids} answered {sent} completions"
        assert str(process.pid) not in pids
        scrapes = [httpx.get(url + "/metrics", headers={"Connection": "close"}) for _ in range(6)]
        assert {r.headers["X-Phasegate-Worker"] for r in scrapes} <= pids
        assert all(_recorded_total(r.text) == sent for r in scrapes)
        triggers = tmp_path / "triggers.jsonl"
        for _ in range(400):
            if triggers.exists() and len(triggers.read_text().splitlines()) >= sent // 2:
                break
            time.sleep(0.05)
        delivered = [json.loads(line)["run_key"] for line in triggers.read_text().splitlines()]
        assert sorted(delivered) == sorted(f"r{i}" for i in range(sent // 2))
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(90)
    log = (tmp_path / "serve.log").read_text()
    assert code == 0, log
    assert log.count("phasegate stopped") == 2, log
    directories = set(re.findall(r"/[^\s\"']*phasegate-metrics-[^\s\"']*", log))
    assert len(directories) == 1, log
    assert not os.path.exists(directories.pop())


def test_several_workers_on_sqlite_stores_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--workers 2 on SQLite stores exits with a usage error naming the store and the way out."""
    config = tmp_path / "phasegate.toml"
    config.write_text(
        CONFIG.format(
            primary=f"sqlite:///{tmp_path}/p.db", backup=f"sqlite:///{tmp_path}/b.db", dir=tmp_path
        )
    )
    code = main(["serve", "--config", str(config), "--workers", "2", "--port", str(free_port())])
    err = capsys.readouterr().err
    assert code != 0
    assert "--workers > 1 needs PostgreSQL or MariaDB/MySQL stores" in err
    assert "'sqlite'" in err


@pytest.mark.slow
@pytest.mark.postgres
def test_sigterm_while_the_workers_start_stops_them_and_exits_0(
    tmp_path: Path, pg_stores: tuple[str, str]
) -> None:
    """A stop asked for while the workers are still starting is a clean stop: a worker the
    forwarded SIGTERM ends before it installed its handlers has nothing to drain."""
    process, _url = _launch(tmp_path, *pg_stores, workers=2)
    log_path = tmp_path / "serve.log"
    try:
        for _ in range(600):
            if "2 workers serving" in log_path.read_text():
                break
            time.sleep(0.01)
        else:
            raise AssertionError(log_path.read_text())
    finally:
        process.send_signal(signal.SIGTERM)  # the workers are spawned, not serving yet
        code = process.wait(90)
    log = log_path.read_text()
    assert code == 0, log
    assert "exited with" not in log, log


def _worker_of(connection: socket.socket) -> str:
    """Ask on a kept-alive connection which worker answers it."""
    connection.sendall(b"GET /livez HTTP/1.1\r\nHost: phasegate\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(4096)
        assert chunk, "the worker closed the connection"
        head += chunk
    found = re.search(rb"(?im)^x-phasegate-worker: *([0-9]+)", head)
    assert found, head
    return found.group(1).decode()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not spreads_connections(), reason="SO_REUSEPORT spreads connections on Linux")
def test_a_burst_of_kept_alive_connections_is_spread_over_the_workers(
    tmp_path: Path, pg_stores: tuple[str, str]
) -> None:
    """Thirty-two connections opened at once and kept alive (a load balancer's pool) land on
    both workers, each a fair share: on one shared socket the first worker awake accepted
    the whole burst, and under a keep-alive load the second one stayed idle."""
    process, url = _start(tmp_path, *pg_stores, workers=2)
    port = int(url.rsplit(":", 1)[1])
    connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(32)]
    try:
        answered = [_worker_of(connection) for connection in connections]
        again = [_worker_of(connection) for connection in connections]
    finally:
        for connection in connections:
            connection.close()
        process.send_signal(signal.SIGTERM)
        code = process.wait(90)
    assert code == 0, (tmp_path / "serve.log").read_text()
    assert again == answered  # each connection stays with the worker that accepted it
    shares = {pid: answered.count(pid) for pid in set(answered)}
    assert len(shares) == 2, shares
    # The kernel hashes each connection to a worker: fewer than 4 of 32 has odds of 1 in
    # 380,000 when the spread is fair.
    assert min(shares.values()) >= 4, shares


@pytest.mark.skipif(not spreads_connections(), reason="SO_REUSEPORT spreads connections on Linux")
def test_each_worker_listens_on_a_socket_of_its_own_on_one_port() -> None:
    """Port 0 picks one free port for the whole group; each socket is SO_REUSEPORT."""
    sockets = bind_workers("127.0.0.1", 0, 3)
    try:
        assert len({id(sock) for sock in sockets}) == 3
        assert len({sock.getsockname()[1] for sock in sockets}) == 1
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_serve_workers_on_a_port_in_use_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_stores: tuple[str, str]
) -> None:
    """The command names the address it could not listen on, not a traceback."""
    config = tmp_path / "phasegate.toml"
    config.write_text(CONFIG.format(primary=pg_stores[0], backup=pg_stores[1], dir=tmp_path))
    taken = bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        code = main(["serve", "--config", str(config), "--workers", "2", "--port", str(port)])
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert code != 0
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "Traceback" not in err


def test_a_port_in_use_is_refused_even_by_another_group_of_workers() -> None:
    """A second ``serve --workers`` on the port of a first is refused, not let in to split
    its connections; so is a port any other listener holds."""
    first = bind_workers("127.0.0.1", 0, 2)
    port = first[0].getsockname()[1]
    plain = bind("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="in use"):
            bind_workers("127.0.0.1", port, 2)
        with pytest.raises(OSError, match="in use"):
            bind_workers("127.0.0.1", plain.getsockname()[1], 2)
    finally:
        for sock in {*first, plain}:
            sock.close()


@pytest.mark.skipif(not spreads_connections(), reason="SO_REUSEPORT spreads connections on Linux")
def test_a_group_that_binds_in_anothers_gap_is_refused_not_let_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two ``serve --workers`` on one port at the same instant: the second probes in the
    gap between the first's probe and its group, and binds its group first. The first
    then finds that group listening beside its own and gives the port up."""
    real_bind = workers.bind
    theirs: list[socket.socket] = []
    rival: list[str] = []

    def bind_with_a_rival(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
        if reuse_port and not rival:
            rival.append("binding")
            theirs.extend(bind_workers(host, port, 2))  # in the gap, before our group
        return real_bind(host, port, reuse_port=reuse_port)

    monkeypatch.setattr(workers, "bind", bind_with_a_rival)
    taken = bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    taken.close()
    try:
        with pytest.raises(OSError, match="another group of listeners took the port"):
            bind_workers("127.0.0.1", port, 2)
        assert len(theirs) == 2
        assert all(sock.fileno() != -1 for sock in theirs)  # the rival keeps its port
        monkeypatch.setattr(workers, "bind", real_bind)
        with pytest.raises(OSError, match="in use"):
            bind_workers("127.0.0.1", port, 2)
    finally:
        for sock in theirs:
            sock.close()


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` holds open."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def _listening_inodes(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            for row in (line.split() for line in list(lines)[1:]):
                if row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == port:
                    found.add(row[9])
    return found


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not spreads_connections(), reason="SO_REUSEPORT spreads connections on Linux")
def test_the_supervisor_lets_go_of_the_workers_sockets(
    tmp_path: Path, pg_stores: tuple[str, str]
) -> None:
    """Once its workers run, the supervisor holds none of their listening sockets: a
    worker that dies takes its socket out of the group with it, instead of leaving a
    share of new connections in a backlog nobody accepts."""
    process, url = _start(tmp_path, *pg_stores, workers=2)
    port = int(url.rsplit(":", 1)[1])
    try:
        listening = _listening_inodes(port)
        assert len(listening) == 2
        assert _socket_inodes(process.pid) & listening == set()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(90)
    assert code == 0, (tmp_path / "serve.log").read_text()


def test_listeners_overlap_on_one_port_at_one_address_or_a_wildcard() -> None:
    """As ``/proc/net/tcp`` writes them: 127.0.0.1:8080 is ``0100007F:1F90``."""
    overlap = workers._overlap
    assert overlap("0100007F:1F90", "0100007F:1F90")
    assert overlap("0100007F:1F90", "00000000:1F90")
    assert overlap("00000000000000000000000000000000:1F90", "00000000000000000000000001000000:1F90")
    assert not overlap("0100007F:1F90", "0100007F:1F91")
    assert not overlap("0100007F:1F90", "0200007F:1F90")
