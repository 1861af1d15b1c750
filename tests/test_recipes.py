"""The recipes of docs/recipes.md, run with the real servers: gunicorn with and
without --preload, uvicorn workers, a multiprocessing pool, and the daemon run as
systemd runs it (docs/fusedb.service) with application processes attaching.

Each server is a real process bound to 127.0.0.1 on a free port; the test sends
real HTTP requests (http.client), waits with deadlines, stops the server by its
pid (SIGTERM, SIGKILL of its process group after a deadline) and stops the
daemon a recipe started with ``fusedb stop PATH``, also when the test fails. The
apps are in tests/recipes/.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fusedb
from http_helpers import (BOOT_TIMEOUT, RECIPES, TESTS, daemon_stopped_after, free_port,
                          fusedb_cli, gunicorn, hammer, http_server, port_is_free,
                          recipe_env, request, stop_process)

UNIT = TESTS.parent / "docs" / "fusedb.service"


def assert_exact(responses: list[tuple[int, bytes]], port: int) -> None:
    """Every increment answered 200, each returned a distinct value (none lost,
    none counted twice), and the counter ends at the number of requests."""
    n = len(responses)
    assert [s for s, _ in responses if s != 200] == []
    assert sorted(int(b) for _, b in responses) == list(range(1, n + 1))
    assert request(port, "/get") == (200, str(n).encode())


def read_closed(path: Path) -> int:
    """The counter as stored on disk once every process let the database go."""
    with fusedb.open(str(path)) as db:
        return int(db.get(b"hits"))


def test_gunicorn_preload_master_owns_the_database(tmp_path):
    db = tmp_path / "db"
    port = free_port()
    cmd = gunicorn(port, "gunicorn_preload:app", "--preload", "--workers", "2")
    with http_server(cmd, recipe_env(db), port, tmp_path / "gunicorn.log") as master:
        assert_exact(hammer(port, 300), port)
        # The master owns the database: an attached process sees the counter.
        with fusedb.connect(str(db)) as other:
            assert other.get(b"hits") == b"300"
        assert stop_process(master) == 0
    # SIGTERM to the master closed the database cleanly (conftest: nothing left).
    assert read_closed(db) == 300


def serve_with_daemon(tmp_path: Path, cmd: list[str], port: int, requests: int) -> Path:
    """Run the HTTP server ``cmd`` whose workers attach with connect(start=True),
    check ``requests`` increments end exact, stop it, check the daemon outlived it,
    stop the daemon and check the counter on disk. Returns the server's log."""
    db, log = tmp_path / "db", tmp_path / "server.log"
    with daemon_stopped_after(db):
        with http_server(cmd, recipe_env(db), port, log) as server:
            assert_exact(hammer(port, requests), port)
            assert stop_process(server) == 0
        assert port_is_free(port), "the daemon inherited the server's listening socket"
        with fusedb.connect(str(db)) as other:
            assert other.get(b"hits") == str(requests).encode()
        assert fusedb_cli("stop", db).returncode == 0
    assert read_closed(db) == requests
    return log


def test_gunicorn_workers_recycled_count_exactly(tmp_path):
    """The issue's must-show: without --preload, 4 workers recycled every 50
    requests, 2,000 increments of one counter from 127.0.0.1 end exact."""
    port = free_port()
    cmd = gunicorn(port, "gunicorn_workers:app", "--workers", "4", "--max-requests", "50")
    log = serve_with_daemon(tmp_path, cmd, port, 2000)
    # About 40 workers were replaced (2,000 / 50), each one attaching anew.
    assert log.read_text().count("Booting worker") >= 4 + 20


def test_gunicorn_preload_with_the_daemon(tmp_path):
    """connect(start=True) at module level with --preload: the master attaches
    (starting the daemon), its forked workers re-attach on first use."""
    port = free_port()
    cmd = gunicorn(port, "gunicorn_workers:app", "--preload", "--workers", "2",
                   "--max-requests", "100")
    serve_with_daemon(tmp_path, cmd, port, 300)


def test_uvicorn_workers_share_one_daemon(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "2", "--no-access-log", "asgi_workers:app"]
    serve_with_daemon(tmp_path, cmd, port, 300)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_pool_gets_the_handle(tmp_path, method):
    db = tmp_path / "db"
    done = subprocess.run([sys.executable, str(RECIPES / "pool_counter.py"), str(db), method],
                          capture_output=True, text=True, timeout=120, env=recipe_env(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2000", "2000"]
    assert read_closed(db) == 2000


def unit_service() -> configparser.SectionProxy:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str      # systemd's keys are case-sensitive
    unit.read(UNIT)
    return unit["Service"]


def wait_ready(sock: socket.socket, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Wait, as systemd does for Type=notify, until ``proc`` sends READY=1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        sock.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
        try:
            if "READY=1" in sock.recv(4096).decode().splitlines():
                return
        except TimeoutError:
            pass
    raise AssertionError(f"no READY=1 within {timeout} s")


def test_systemd_service_with_attaching_applications(tmp_path):
    """The daemon run as docs/fusedb.service runs it (its ExecStart, with this
    database's path; readiness by READY=1 on NOTIFY_SOCKET; stopped by its pid with
    the unit's KillSignal within TimeoutStopSec), two application processes
    attaching with connect(PATH)."""
    service = unit_service()
    assert service["Type"] == "notify"
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "fusedb" and argv[1] == "serve"
    db = tmp_path / "db"
    cmd = [sys.executable, "-m", "fusedb", "serve", str(db), *argv[3:]]
    kill = signal.Signals[service["KillSignal"]]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        env = recipe_env(db, NOTIFY_SOCKET=str(tmp_path / "notify"))
        log = tmp_path / "serve.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(notify, proc, log, BOOT_TIMEOUT)
            apps = [subprocess.Popen([sys.executable, str(RECIPES / "attach_app.py"), str(db),
                                      "1000"], env=env, stdout=subprocess.PIPE, text=True)
                    for _ in range(2)]
            outs = [app.communicate(timeout=120)[0] for app in apps]
            assert [app.returncode for app in apps] == [0, 0]
            assert max(int(o) for o in outs) == 2000
            proc.send_signal(kill)
            assert proc.wait(float(service["TimeoutStopSec"])) == 0
        finally:
            stop_process(proc)
    # Stopped: applications cannot attach (connect does not start a daemon).
    late = subprocess.run([sys.executable, str(RECIPES / "attach_app.py"), str(db), "1"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert late.returncode != 0 and "NotRunningError" in late.stderr
    assert read_closed(db) == 2000


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze (Debian package systemd) is not installed")
def test_systemd_unit_verifies(tmp_path):
    """systemd's own checker accepts docs/fusedb.service, warning about nothing. It
    requires ExecStart's program to exist: the copy checked names this Python."""
    program = shlex.split(unit_service()["ExecStart"])[0]
    copy = tmp_path / "fusedb.service"
    copy.write_text(UNIT.read_text().replace(program, sys.executable))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
