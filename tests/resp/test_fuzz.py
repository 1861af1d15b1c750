"""Hypothesis-generated request streams never bring a server process down:
random bytes, valid request arrays truncated or mutated (bytes flipped,
inserted, removed), sent whole or in pieces. After every example the server
process answers PING on a new connection and its pid is the one it had (not
a restart by the supervisor). Both parsers (hiredis, pure)."""

from __future__ import annotations

import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import fusedb_env, module_server, start_fusedb

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module", params=["hiredis", "pure"])
def fuzz_server(request, tmp_path_factory):
    """One server process (so "its pid" is one pid)."""
    env = fusedb_env(FUSEDB_RESP_PURE="1" if request.param == "pure" else "0")
    with module_server(tmp_path_factory, "fuzz-" + request.param, start_fusedb,
                       servers=1, env=env) as server:
        kids = [c for c in psutil.Process(server.pid).children()
                if "fusedb.resp.process" in " ".join(c.cmdline())]
        assert len(kids) == 1
        server.server_pid = kids[0].pid
        yield server
        log = server.log.read_text(errors="replace")
        assert "Traceback" not in log and "internal error" not in log, log[-3000:]


ARGS = st.lists(st.one_of(st.sampled_from([b"PING", b"ECHO", b"GET", b"SET", b"QUIT",
                                           b"HELLO", b"AUTH", b"SELECT", b"3", b"0",
                                           b"\r\n", b"*", b"$"]),
                          st.binary(max_size=40)), min_size=0, max_size=6)


def frame(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


@st.composite
def streams(draw) -> list[bytes]:
    """A request stream, as the pieces it is sent in."""
    kind = draw(st.sampled_from(["bytes", "frames", "truncated", "mutated", "inline"]))
    if kind == "bytes":
        data = draw(st.binary(max_size=300))
    elif kind == "inline":
        data = b"\r\n".join(b" ".join(a) for a in draw(st.lists(ARGS, max_size=4)))
    else:
        data = b"".join(frame(a) for a in draw(st.lists(ARGS, min_size=1, max_size=4)))
        if kind == "truncated":
            data = data[:draw(st.integers(0, len(data)))]
        elif kind == "mutated":
            for _ in range(draw(st.integers(1, 4))):
                i = draw(st.integers(0, len(data)))
                how = draw(st.sampled_from(["flip", "insert", "delete"]))
                b = bytes([draw(st.integers(0, 255))])
                if how == "flip":
                    data = data[:i] + b + data[i + 1:]
                elif how == "insert":
                    data = data[:i] + b + data[i:]
                else:
                    data = data[:i] + data[i + 1:]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    pieces, last = [], 0
    for c in cuts + [len(data)]:
        pieces.append(data[last:c])
        last = c
    return [p for p in pieces if p]


def send(server, pieces: list[bytes]) -> None:
    with server.raw(5.0) as s:
        try:
            for p in pieces:
                s.sendall(p)
            s.settimeout(0.02)
            while s.recv(65536):
                pass
        except (OSError, TimeoutError):
            pass


def answers_ping(server) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with server.raw(5.0) as s:
                s.sendall(b"PING\r\n")
                if s.recv(100) == b"+PONG\r\n":
                    return True
        except OSError:
            time.sleep(0.05)
    return False


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pieces=streams())
def test_no_request_stream_brings_a_server_process_down(fuzz_server, pieces):
    send(fuzz_server, pieces)
    assert answers_ping(fuzz_server)
    assert psutil.pid_exists(fuzz_server.server_pid)
    kids = [c.pid for c in psutil.Process(fuzz_server.pid).children()
            if c.pid == fuzz_server.server_pid]
    assert kids == [fuzz_server.server_pid], "the server process was replaced"
