"""Helpers for tests that run real servers (gunicorn, uvicorn, the daemon) and talk
HTTP to them: free loopback ports, requests on new connections, a bounded load from
client threads, starting a server and waiting until it answers, stopping processes
by their pid, and stopping a daemon with ``fusedb stop PATH``. Used by
tests/test_recipes.py and tests/adapters/test_servers.py; the apps are in
tests/recipes/.

Every wait has a deadline: a server must answer within BOOT_TIMEOUT seconds and
exit within STOP_TIMEOUT seconds of SIGTERM (then its process group gets SIGKILL).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent
RECIPES = TESTS / "recipes"
BOOT_TIMEOUT = 60.0     # seconds for a server to answer its first request
STOP_TIMEOUT = 30.0     # seconds for a server to exit after SIGTERM


def recipe_env(path: Path, **extra: str) -> dict[str, str]:
    """The environment of a recipe's process: this checkout and the apps importable,
    the database directory in FUSEDB_RECIPE_PATH."""
    env = dict(os.environ, FUSEDB_RECIPE_PATH=str(path), **extra)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS.parent), str(RECIPES)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """No socket listens on 127.0.0.1:``port`` (connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def request(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` from 127.0.0.1:``port`` on a new connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def hammer(port: int, count: int, threads: int = 8,
           path: str = "/incr") -> list[tuple[int, bytes]]:
    """``count`` GET ``path`` requests from ``threads`` client threads, each on a new
    connection: the (status, body) of each, in order of submission."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: request(port, path), range(count)))


def stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM ``proc`` by its pid; if it has not exited within ``timeout`` seconds,
    SIGKILL its process group (it was started in a session of its own). Returns
    its exit status (negative: the signal that ended it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    return proc.returncode


def fusedb_cli(command: str, path: Path) -> subprocess.CompletedProcess:
    """``python -m fusedb COMMAND PATH`` (stop, stats), as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "fusedb", command, str(path)],
                          capture_output=True, text=True, timeout=STOP_TIMEOUT * 2,
                          env=recipe_env(path))


@contextmanager
def daemon_stopped_after(path: Path):
    """Run the block, then stop the daemon of ``path`` if one runs (also when the
    block fails); fails if ``fusedb stop`` says anything but stopped/not running."""
    try:
        yield
    finally:
        done = fusedb_cli("stop", path)
        assert done.returncode in (0, 1), done.stderr


@contextmanager
def http_server(cmd: list[str], env: dict[str, str], port: int, log: Path):
    """Start the server ``cmd`` (logging to ``log``), wait until it answers GET /pid
    on ``port``, yield its Popen; stop it by its pid afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=RECIPES, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            assert proc.poll() is None, f"{cmd[2]} exited:\n{log.read_text()[-3000:]}"
            try:
                if request(port, "/pid")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no answer:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        yield proc
    finally:
        stop_process(proc)


def gunicorn(port: int, app: str, *options: str) -> list[str]:
    # No control socket: gunicorn >= 25.1 would otherwise make one in $HOME.
    return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
            "--no-control-socket", *options, app]


def wait_for_workers(port: int, count: int, threads: int = 8) -> set[bytes]:
    """Send GET /pid from ``threads`` client threads until ``count`` distinct worker
    pids have answered (every worker is up and taking connections), within
    BOOT_TIMEOUT seconds. Returns the pids seen."""
    seen: set[bytes] = set()
    deadline = time.monotonic() + BOOT_TIMEOUT
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only {len(seen)} of {count} workers answered"
        seen.update(body for status, body in hammer(port, 4 * threads, threads, "/pid")
                    if status == 200)
    return seen
