"""The wire, over raw sockets: inline commands, pipelining, malformed frames
(each compared byte for byte with a real redis-server 7.0.15 in the same
test, with both of FuseDB's parsers: hiredis and the pure one), the 2^40
bulk, half-close, a reader that never reads, idle connections, maxclients,
passwords and protected mode, the unix socket's permissions.

Every server here is a real process stopped by its pid (conftest)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import stat
import subprocess
import threading
import time

import psutil
import pytest

from .conftest import fusedb_env, module_server, serve_command, start_fusedb, start_redis

PARSERS = ["hiredis", "pure"]


@pytest.fixture(scope="module", params=PARSERS)
def fusedb_parser(request, tmp_path_factory):
    """A fusedb daemon per parser (FUSEDB_RESP_PURE=1: the pure parser)."""
    env = fusedb_env(FUSEDB_RESP_PURE="1" if request.param == "pure" else "0")
    with module_server(tmp_path_factory, "fusedb-" + request.param, start_fusedb,
                       env=env) as server:
        yield server


def read_all(s: socket.socket, idle: float = 0.3, limit: float = 20.0) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (closed: True) or is quiet
    for ``idle`` seconds (closed: False)."""
    got = b""
    s.settimeout(idle)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            return got, False
        except ConnectionResetError:
            return got, True
        if not chunk:
            return got, True
        got += chunk
    raise AssertionError(f"still sending after {limit}s: {got[:200]!r}")


def exchange(server, payload: bytes, split: bool = False,
             idle: float = 0.3) -> tuple[bytes, bool]:
    """Send ``payload`` on a new connection (whole, or one byte per send with a
    pause: every partial state of the parser); (what came back, closed)."""
    with server.raw() as s:
        try:
            if split:
                for i in range(len(payload)):
                    s.sendall(payload[i:i + 1])
                    time.sleep(0.0005)
            else:
                s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass                       # closed on an error: the reply was sent before
        return read_all(s, idle)


def assert_same_as_redis(redis_server, server, payload: bytes, split: bool = False) -> None:
    """``payload`` gets the same bytes back from ``server`` as from Redis, and
    the connection is closed by both or neither. A difference is checked again
    with a longer wait for a quiet connection (a loaded machine)."""
    got = exchange(server, payload, split)
    if got != exchange(redis_server, payload, split):
        got = exchange(server, payload, split, idle=2.0)
        assert got == exchange(redis_server, payload, split, idle=2.0)


# -- compared with Redis --------------------------------------------------------------

SAME_AS_REDIS = [
    b"PING\r\n",
    b"ping\n",
    b"\r\n\r\nPING\r\n\n",
    b"ECHO \"a b\" \r\n",
    b"ECHO 'it\\'s'\r\n",
    b"ECHO \"\\x41\\x4a\\n\\t\\q\"\r\n",
    b"ECHO \"a\"b\r\n",
    b"ECHO 'unbalanced\r\n",
    b"ECHO a\x00b\r\n",
    b"ECHO a\x0bb\r\nECHO \x0c a\tb\r\n",
    b"ECHO a\rb\r\nKEYS *\r\n*1\r\n$4\r\nPING\r\nPING\n",
    b"*1\r\n$4\r\nPING\r\n",
    b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
    b"*0\r\n*-1\r\n*-10\r\nPING\r\n",
    b"*1\r\n$4\r\nPING\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
    b"*1\r\nfoo\r\n",
    b"*3000000000\r\n",
    b"*20000000000000000000\r\n",
    b"*abc\r\n",
    b"*01\r\n$4\r\nPING\r\n",
    b"*1\r\n$2000000000\r\n",
    b"*1\r\n$1099511627776\r\n",
    b"*1\r\n$blabla\r\n",
    b"*1\r\n$-1\r\n",
    b"*1\r\n$04\r\nPING\r\n",
    b"*2\r\n:5\r\n$4\r\nPING\r\n",
    b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n*1\r\n",
    b"*1\r\n$4\r\nPING\r\n*1\r\n\xff\r\n",
    b"*1\r\n$4\r\nPING\r\n*1\r\n\r\r\n",
    b"*1\r\n$4\r\nPINGXY*1\r\n$4\r\nPING\r\n",
    b"PING\r\nQUIT\r\nPING\r\n",
    b"*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n",
    b"A" * 70000,
    b"*" + b"1" * 70000,
    b"*1\r\n$" + b"1" * 70000,
    b"AUTH x\r\n",
    b"AUTH a b c\r\n",
    b"AUTH default x\r\n",
    b"HELLO 4\r\n",
    b"HELLO x\r\n",
    b"HELLO 2 AUTH a b\r\n",
    b"HELLO 2 FOO\r\n",
    b"SELECT 0\r\nSELECT x\r\n",
]


@pytest.mark.parametrize("payload", SAME_AS_REDIS, ids=lambda p: repr(p[:40]))
def test_replies_and_protocol_errors_are_redis_s(payload, redis_server, fusedb_parser):
    assert_same_as_redis(redis_server, fusedb_parser, payload)


@pytest.mark.parametrize("payload", [p for p in SAME_AS_REDIS if len(p) < 100][::3],
                         ids=lambda p: repr(p[:40]))
def test_every_split_of_a_request_gives_the_same_replies(payload, redis_server,
                                                         fusedb_parser):
    assert_same_as_redis(redis_server, fusedb_parser, payload, split=True)


def test_a_pipeline_of_10k_mixed_commands_is_answered_in_order(fusedb_parser):
    n = 10_000
    parts, want = [], []
    for i in range(n):
        v = b"v%d" % i
        if i % 3 == 0:
            parts.append(b"ECHO %s\r\n" % v)           # inline, between arrays
        else:
            parts.append(b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n" % (len(v), v))
        want.append(b"$%d\r\n%s\r\n" % (len(v), v))
    payload, want = b"".join(parts), b"".join(want)
    with fusedb_parser.raw() as s:
        sender = threading.Thread(target=s.sendall, args=(payload,))
        sender.start()
        got = b""
        s.settimeout(20)
        while len(got) < len(want):
            chunk = s.recv(1 << 20)
            assert chunk, "closed"
            got += chunk
        sender.join(20)
    assert got == want


# -- hostile clients --------------------------------------------------------------------

def server_processes(serve_pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(serve_pid).children(recursive=True)
            if "fusedb.resp.process" in " ".join(c.cmdline())]


def rss(serve_pid: int) -> int:
    """The largest RSS (bytes) among the daemon's server processes."""
    return max(p.memory_info().rss for p in server_processes(serve_pid))


def test_an_endless_request_is_closed_with_bounded_memory(fusedb_parser):
    """A request with 2^40 bytes of bulk is refused at its header; one with
    ever more small arguments is closed once it holds the query limit (64
    MiB): the server never holds much more than that."""
    before = rss(fusedb_parser.pid)
    assert exchange(fusedb_parser, b"*1\r\n$1099511627776\r\n") == (
        b"-ERR Protocol error: invalid bulk length\r\n", True)
    arg = b"$10\r\n0123456789\r\n"
    chunk = arg * 4096
    sent = 0
    peak = before
    with fusedb_parser.raw() as s:
        s.sendall(b"*2000000000\r\n")
        try:
            while sent < 400 << 20:
                s.sendall(chunk)
                sent += len(chunk)
                if sent % (8 << 20) < len(chunk):
                    peak = max(peak, rss(fusedb_parser.pid))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert read_all(s) == (b"", True)
    assert sent < 200 << 20, "the connection was not closed"
    assert peak - before < 160 << 20, (before, peak)
    assert exchange(fusedb_parser, b"PING\r\n") == (b"+PONG\r\n", False)


def test_a_huge_multibulk_count_allocates_nothing(fusedb_parser):
    """``*2000000000`` (then nothing): the server waits for the arguments
    without reserving room for them (hiredis would allocate 16 GB of address
    space and block its loop for seconds), and answers others at once."""
    with fusedb_parser.raw() as s, fusedb_parser.raw() as t:
        s.sendall(b"*2000000000\r\n*1\r\n*3000000000\r\n")
        time.sleep(0.2)
        start = time.monotonic()
        for _ in range(20):
            t.sendall(b"PING\r\n")
            assert t.recv(100) == b"+PONG\r\n"
        assert time.monotonic() - start < 2.0
        vms = max(p.memory_info().vms for p in server_processes(fusedb_parser.pid))
        assert vms < 4 << 30, vms


@pytest.mark.parametrize("command", ["ECHO", "GET"])
def test_a_client_that_never_reads_is_not_read_either(fusedb_parser, command):
    """Pipelined ECHOs of 16 KiB (the general path), or GETs of a 16 KiB
    value (the compiled one), never reading the replies: the server stops
    reading (backpressure) with a few MiB buffered, and answers them all once
    the client reads."""
    value = b"x" * 16000
    if command == "ECHO":
        req = b"*2\r\n$4\r\nECHO\r\n$16000\r\n%s\r\n" % value
        n = 8000                                    # 128 MB of replies
    else:
        fusedb_parser.client().set(b"big", value)
        req = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n"
        n = 100_000                                 # 1.6 GB of replies
    before = rss(fusedb_parser.pid)
    with fusedb_parser.raw() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sender = threading.Thread(target=s.sendall, args=(req * n,), daemon=True)
        sender.start()
        time.sleep(2.0)
        if command == "ECHO":
            assert sender.is_alive(), "all sent: the server read everything"
        grown = rss(fusedb_parser.pid) - before
        assert grown < 48 << 20, grown
        want = len(b"$16000\r\n%s\r\n" % value) * n
        got = 0
        s.settimeout(30)
        while got < want:
            chunk = s.recv(1 << 20)
            assert chunk, "closed"
            got += len(chunk)
        sender.join(30)
        assert got == want


def test_a_half_closed_connection_gets_its_replies_then_is_closed(fusedb_parser):
    with fusedb_parser.raw() as s:
        s.sendall(b"PING\r\n*2\r\n$4\r\nECHO\r\n$1\r\na\r\nECHO b\r\n")
        s.shutdown(socket.SHUT_WR)
        assert read_all(s, idle=5.0) == (b"+PONG\r\n$1\r\na\r\n$1\r\nb\r\n", True)


def test_two_thousand_idle_connections_and_the_next_one_is_served(fusedb_parser):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    socks = []
    try:
        while len(socks) < 2000:
            try:
                socks.append(fusedb_parser.raw())
            except BlockingIOError:    # the accept queue is full: the servers catch up
                time.sleep(0.01)
        assert exchange(fusedb_parser, b"PING\r\n") == (b"+PONG\r\n", False)
        for s in socks[::100]:
            s.sendall(b"PING\r\n")
            assert s.recv(100) == b"+PONG\r\n"
    finally:
        for s in socks:
            s.close()


def test_maxclients_refuses_the_connection_over_the_limit(tmp_path):
    with start_fusedb(tmp_path, "--maxclients", "3", servers=1) as server:
        held = [server.raw() for _ in range(3)]
        try:
            for s in held:
                s.sendall(b"PING\r\n")
                assert s.recv(100) == b"+PONG\r\n"
            assert exchange(server, b"PING\r\n") == (
                b"-ERR max number of clients reached\r\n", True)
            held.pop().close()
            deadline = time.monotonic() + 10
            while exchange(server, b"PING\r\n") != (b"+PONG\r\n", False):
                assert time.monotonic() < deadline
        finally:
            for s in held:
                s.close()


# -- passwords ------------------------------------------------------------------------

AUTH_EXCHANGES = [
    b"PING\r\n",
    b"ECHO a\r\n",
    b"NOSUCHCOMMAND a b\r\n",
    b"AUTH wrong\r\nPING\r\n",
    b"AUTH default wrong\r\n",
    b"AUTH nobody s3cret\r\n",
    b"AUTH s3cret\r\nPING\r\n",
    b"AUTH default s3cret\r\nPING\r\n",
    b"HELLO 3\r\n",
    b"HELLO 2 AUTH default wrong\r\n",
    b"*11\r\n",
    b"*1\r\n$16385\r\n",
    b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n*11\r\n" + b"$1\r\na\r\n" * 11,
    b"AUTH s3cret\r\n*2\r\n$4\r\nECHO\r\n$16385\r\n" + b"y" * 16385 + b"\r\n",
    b"AUTH s3cret\r\nRESET\r\nPING\r\n",
    b"QUIT\r\n",
]


@pytest.fixture(scope="module")
def password_servers(tmp_path_factory):
    with module_server(tmp_path_factory, "redis-pw", start_redis, password="s3cret") as r, \
            module_server(tmp_path_factory, "fusedb-pw", start_fusedb,
                          password="s3cret") as f:
        yield r, f


@pytest.mark.parametrize("payload", AUTH_EXCHANGES, ids=lambda p: repr(p[:30]))
def test_noauth_wrongpass_and_unauthenticated_limits_are_redis_s(payload, password_servers):
    redis_pw, fusedb_pw = password_servers
    want = exchange(redis_pw, payload)
    got = exchange(fusedb_pw, payload)
    if want[0].startswith(b"-ERR Protocol error: unauth"):
        # Redis may reset a connection it closes with unread input.
        assert got[1] and want[1] and got[0] in (want[0], b"")
    else:
        assert_same_as_redis(redis_pw, fusedb_pw, payload)


def test_redis_py_authenticates_with_hello_and_auth(password_servers):
    _, server = password_servers
    for protocol in (2, 3):
        r = server.client(protocol=protocol, password="s3cret")
        assert r.ping() is True
        assert r.echo(b"x") == b"x"
        bad = server.client(protocol=protocol, password="nope")
        with pytest.raises(Exception, match="invalid username-password"):
            bad.ping()


def test_protected_mode_refuses_a_public_address_without_a_password(tmp_path):
    path = str(tmp_path / "db")
    r = subprocess.run(serve_command(path, "--bind", "0.0.0.0", "--port", "6390"),
                       capture_output=True, text=True, timeout=60, env=fusedb_env())
    assert r.returncode == 2
    assert "protected mode" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists(path)


def test_a_port_in_use_exits_1_with_one_line_and_closes_the_database(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        path = str(tmp_path / "db")
        r = subprocess.run(serve_command(path, "--port", str(port), "--servers", "1"),
                           capture_output=True, text=True, timeout=120, env=fusedb_env())
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "ERROR" in ln]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_if_not_running_exits_0_when_the_daemon_and_its_port_are_taken(tmp_path):
    with start_fusedb(tmp_path, tcp=True, unix=False, servers=1) as server:
        r = subprocess.run(serve_command(server.path, "--port", str(server.port),
                                         "--if-not-running"),
                           capture_output=True, text=True, timeout=120, env=fusedb_env())
        assert r.returncode == 0, r.stderr
        assert exchange(server, b"PING\r\n") == (b"+PONG\r\n", False)


def test_the_unix_socket_has_the_permissions_asked_and_goes_at_stop(tmp_path):
    with start_fusedb(tmp_path / "a", servers=1) as server:
        assert stat.S_IMODE(os.stat(server.unixsocket).st_mode) == 0o700
        sock = server.unixsocket
    assert not os.path.exists(sock)
    with start_fusedb(tmp_path / "b", "--unixsocketperm", "660", servers=1) as server:
        assert stat.S_IMODE(os.stat(server.unixsocket).st_mode) == 0o660


def test_the_password_file_is_read_and_no_password_is_in_any_command_line(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("fil3-s3cret\n")
    with start_fusedb(tmp_path / "d", "--requirepass-file", str(secret), servers=2) as server:
        assert exchange(server, b"PING\r\n") == (
            b"-NOAUTH Authentication required.\r\n", False)
        assert exchange(server, b"AUTH fil3-s3cret\r\nPING\r\n") == (
            b"+OK\r\n+PONG\r\n", False)
        procs = [psutil.Process(server.pid)] + psutil.Process(server.pid).children(True)
        assert len(procs) >= 3
        for p in procs:
            assert "fil3-s3cret" not in " ".join(p.cmdline())


def test_ctrl_c_of_the_process_group_stops_serve_and_its_servers_cleanly(tmp_path):
    """The terminal's SIGINT reaches serve's process group; the server
    processes are in their own, so serve stops them (no restart), then closes."""
    with start_fusedb(tmp_path, servers=2) as server:
        servers = [c for c in psutil.Process(server.pid).children()
                   if "fusedb.resp.process" in " ".join(c.cmdline())]
        os.killpg(server.pid, signal.SIGINT)
        assert server.proc.wait(60) == 0
        for p in servers:
            assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
        log = server.log_text()
        assert "restarting" not in log and "Traceback" not in log, log
        assert not os.path.exists(server.unixsocket)
