"""Fixtures of the Redis protocol tests: real servers, real clients.

- ``redis_server``: a real redis-server 7.0.15 (unix socket in a temporary
  directory, ``--save '' --appendonly no``), one per test module.
- ``fusedb_server``: a FuseDB daemon ``fusedb serve PATH --unixsocket S
  --servers 2``, one per test module; ``fusedb_tcp``: the same on an
  ephemeral 127.0.0.1 port.
- ``target``: parametrised over {redis, fusedb} x RESP {2, 3}: a test that
  takes it runs against real Redis too, so the replies it expects are checked
  against Redis on every run. ``target.r`` is a redis-py client of that
  protocol on a flushed database; ``target.client(**kw)`` makes more;
  ``target.raw()`` a plain socket.
- :func:`start_fusedb` / :func:`start_redis`: context managers for tests that
  need a server of their own (flags, passwords, faults).

Every server is stopped by its pid (SIGTERM, then SIGKILL of its process
group after STOP_TIMEOUT) also when a test fails. The per-test leak check of
tests/conftest.py is replaced here by one that tolerates the module's servers
(they were there before the test) and fails on anything a test left beyond
them; each module server is checked for leaks once it has stopped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from fusedb.testing import fusedb_processes, fusedb_shm, fusedb_threads
from http_helpers import stop_process

redis = pytest.importorskip("redis")

REPO = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server")
BOOT_TIMEOUT = 60.0      # seconds for a server to answer PING
STOP_TIMEOUT = 30.0      # seconds for a server to exit after SIGTERM


@dataclass
class Server:
    """A running server: ``kind`` "redis" or "fusedb", its ``unixsocket``,
    ``port`` (0: none), ``proc`` (redis-server, or ``fusedb serve``), ``path``
    (the database directory of a fusedb server), ``log`` (its output file)."""

    kind: str
    unixsocket: str | None
    port: int
    proc: subprocess.Popen
    path: str | None = None
    log: Path | None = None
    clients: list = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, protocol: int = 3, **kw) -> redis.Redis:
        """A redis-py client (closed when the server's fixture ends)."""
        if self.unixsocket and "host" not in kw and "port" not in kw:
            kw.setdefault("unix_socket_path", self.unixsocket)
        else:
            kw.setdefault("host", "127.0.0.1")
            kw.setdefault("port", self.port)
        kw.setdefault("socket_timeout", 30)
        c = redis.Redis(protocol=protocol, **kw)
        self.clients.append(c)
        return c

    def raw(self, timeout: float = 10.0) -> socket.socket:
        """A plain connected socket (the caller closes it)."""
        if self.unixsocket:
            s = socket.socket(socket.AF_UNIX)
            addr = self.unixsocket
        else:
            s = socket.socket()
            addr = ("127.0.0.1", self.port)
        s.settimeout(timeout)
        s.connect(addr)
        return s

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log else ""

    def close_clients(self) -> None:
        for c in self.clients:
            c.close()
        self.clients = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(server: Server, password: str | None = None) -> bool:
    """Whether the server answers PING on a new connection (or NOAUTH: it
    answers, wanting a password)."""
    try:
        s = server.raw(2.0)
    except OSError:
        return False
    with s:
        try:
            if password is not None:
                s.sendall(b"AUTH %s\r\n" % password.encode())
            s.sendall(b"PING\r\n")
            got = b""
            while got.count(b"\r\n") < (2 if password is not None else 1):
                chunk = s.recv(4096)
                if not chunk:
                    return False
                got += chunk
            return got.endswith(b"+PONG\r\n") or got.startswith(b"-NOAUTH")  # up: wants AUTH
        except OSError:
            return False


def wait_answering(server: Server, password: str | None = None,
                   timeout: float = BOOT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ping(server, password):
        if server.proc.poll() is not None:
            raise AssertionError(f"{server.kind} exited with {server.proc.returncode}:\n"
                                 f"{server.log_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{server.kind} did not answer in {timeout}s:\n"
                                 f"{server.log_text()}")
        time.sleep(0.05)


def stop_server(server: Server) -> int:
    """SIGTERM by pid; SIGKILL its process group after STOP_TIMEOUT. Its exit
    status."""
    server.close_clients()
    return stop_process(server.proc, STOP_TIMEOUT)


def fusedb_env(**extra: str) -> dict:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")]
                                                        if p])
    return env


def serve_command(path: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "fusedb", "serve", path, "--log-level", "warning", *flags]


@contextmanager
def start_fusedb(where: Path, *flags: str, servers: int = 2, unix: bool = True,
                 tcp: bool = False, password: str | None = None, env: dict | None = None,
                 expect_ready: bool = True):
    """A ``fusedb serve`` of ``where``/db with a unix socket (``unix``) and/or
    an ephemeral TCP port (``tcp``), ``servers`` server processes and
    ``flags``; yields the Server once it answers PING; stops it afterwards
    (SIGTERM, then SIGKILL) and asserts it stopped with status 0."""
    where.mkdir(parents=True, exist_ok=True)
    path = str(where / "db")
    sock = str(where / "s.sock") if unix else None
    port = free_port() if tcp else 0
    args = [f"--servers={servers}"]
    if sock:
        args += ["--unixsocket", sock]
    if port:
        args += ["--port", str(port)]
    if password is not None:
        args += ["--requirepass", password]
    log = where / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(serve_command(path, *args, *flags), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, cwd=str(where),
                                env=env or fusedb_env(), start_new_session=True)
    server = Server("fusedb", sock, port, proc, path, log)
    try:
        if expect_ready:
            wait_answering(server, password)
        yield server
    finally:
        code = stop_server(server)
    if expect_ready:
        assert code == 0, f"fusedb serve exited with {code}:\n{server.log_text()}"


@contextmanager
def start_redis(where: Path, *args: str, tcp: bool = False, password: str | None = None):
    """A real redis-server (unix socket ``where``/redis.sock, no persistence),
    stopped by its pid afterwards."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    where.mkdir(parents=True, exist_ok=True)
    sock = str(where / "redis.sock")
    port = free_port() if tcp else 0
    cmd = [REDIS_SERVER, "--port", str(port), "--unixsocket", sock, "--unixsocketperm", "700",
           "--save", "", "--appendonly", "no", "--dir", str(where), "--daemonize", "no",
           "--logfile", str(where / "redis.log"), *args]
    if password is not None:
        cmd += ["--requirepass", password]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("redis", sock, port, proc, None, where / "redis.log")
    try:
        wait_answering(server, password)
        yield server
    finally:
        stop_server(server)


# -- fixtures ---------------------------------------------------------------------------

#: The module-scoped servers: pid -> their directory (their processes and shared
#: memory are not a test's leak; they are checked when the module ends).
_MODULE_SERVERS: dict[int, str] = {}


def _module_owned(p) -> bool:
    try:
        return p.pid in _MODULE_SERVERS or any(a.pid in _MODULE_SERVERS for a in p.parents())
    except psutil.Error:
        return False


def check_leaks(base: str, shm_before: set, procs_before: set) -> None:
    """tests/conftest.py's leak check (fusedb.testing.assert_no_leaks) for
    processes and shared memory of ``base`` that were not there before,
    tolerating the module servers (processes get 10 s to exit, then are
    killed and the check fails)."""
    deadline = time.monotonic() + 10.0
    while True:
        left = [p for p in fusedb_processes(base)
                if p.pid not in procs_before and not _module_owned(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p in left:
        p.kill()
    leaked = fusedb_shm(base) - shm_before
    for where in _MODULE_SERVERS.values():
        leaked -= fusedb_shm(where)
    assert not left, f"test left processes running: {left}"
    assert not leaked, f"test leaked shared-memory objects: {sorted(leaked)}"
    assert not fusedb_threads(), f"test left FuseDB threads running: {fusedb_threads()}"


@pytest.fixture(autouse=True)
def no_leaks(tmp_path_factory):
    """The leak check of every test here (:func:`check_leaks`)."""
    base = os.path.realpath(str(tmp_path_factory.getbasetemp()))
    shm_before = fusedb_shm(base)
    procs_before = {p.pid for p in fusedb_processes(base)}
    yield
    check_leaks(base, shm_before, procs_before)


@contextmanager
def module_server(tmp_path_factory, name: str, start, *args, **kw):
    """``start(where, *args, **kw)`` in a directory of its own, registered as
    a module server while it runs; leak-checked once stopped."""
    base = os.path.realpath(str(tmp_path_factory.mktemp(name)))
    before = fusedb_shm(base)
    with start(Path(base), *args, **kw) as server:
        _MODULE_SERVERS[server.pid] = base
        try:
            yield server
        finally:
            _MODULE_SERVERS.pop(server.pid, None)
    check_leaks(base, before, set())


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with module_server(tmp_path_factory, "redis", start_redis) as server:
        yield server


@pytest.fixture(scope="module")
def fusedb_server(tmp_path_factory):
    with module_server(tmp_path_factory, "fusedb", start_fusedb) as server:
        yield server


@pytest.fixture(scope="module")
def fusedb_tcp(tmp_path_factory):
    with module_server(tmp_path_factory, "fusedbtcp", start_fusedb, tcp=True,
                       unix=False) as server:
        yield server


@dataclass
class Target:
    """A server and a client of one protocol (module doc)."""

    server: Server
    protocol: int
    r: redis.Redis

    @property
    def kind(self) -> str:
        return self.server.kind

    def client(self, **kw) -> redis.Redis:
        kw.setdefault("protocol", self.protocol)
        return self.server.client(**kw)

    def raw(self, timeout: float = 10.0) -> socket.socket:
        return self.server.raw(timeout)


@pytest.fixture(params=["redis-2", "redis-3", "fusedb-2", "fusedb-3"])
def target(request):
    """Each of {redis, fusedb} x RESP {2, 3}, with a flushed database."""
    kind, protocol = request.param.split("-")
    server = request.getfixturevalue(f"{kind}_server")
    r = server.client(protocol=int(protocol))
    r.flushall()
    yield Target(server, int(protocol), r)
    r.close()
