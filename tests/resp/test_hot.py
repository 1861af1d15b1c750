"""The compiled hot path (fusedb.resp._hot) changes no byte of any reply: the
same pipelined streams, cut into reads at random places, get byte-identical
answers from a server running it (the compiled kernel) and from one on the
pure-Python path (FUSEDB_NO_EXTENSIONS=1: the general parser and command
table for everything); and, for what Redis also accepts, from redis-server.
The streams mix what the hot path takes (GET / SET / INCR in any case) with
what it must leave to the general path: options, wrong arities, an INCR of a
non-integer or past 2^63-1, keys and values over FuseDB's limits, the empty
key, inline commands, other commands between them."""

from __future__ import annotations

import random
import time

import pytest

from fusedb.core import kernel

from .conftest import fusedb_env, start_fusedb, start_redis

END = b"*2\r\n$4\r\nECHO\r\n$3\r\nEND\r\n"
END_REPLY = b"$3\r\nEND\r\n"


def frame(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def stream(rnd: random.Random, n: int, redis_too: bool) -> list[bytes]:
    keys = [b"k1", b"k2", b"counter", b"text", b"big"]
    out = [frame(b"SET", b"text", b"abc"), frame(b"SET", b"big", b"9223372036854775806")]
    for _ in range(n):
        r = rnd.random()
        k = rnd.choice(keys)
        name = rnd.choice([b"GET", b"get", b"Get", b"SET", b"set", b"INCR", b"incr", b"iNcR"])
        if r < 0.7:
            if name.lower() == b"set":
                v = rnd.choice([b"", b"1", b"-5", b"x" * rnd.randint(0, 300), b"12a"])
                out.append(frame(name, k, v))
            else:
                out.append(frame(name, k))
        elif r < 0.75:
            out.append(frame(b"SET", k, b"v", b"EX", b"100"))        # an option
        elif r < 0.8:
            out.append(frame(b"GET", k, b"extra"))                     # wrong arity
        elif r < 0.83:
            out.append(frame(b"INCR"))                                 # wrong arity
        elif r < 0.86:
            out.append(b"PING\r\n")                                    # inline
        elif r < 0.9:
            out.append(frame(b"INCRBY", k, b"2"))                     # not a hot command
        elif r < 0.93:
            out.append(frame(b"GETS", k))                             # unknown, 3+1 letters
        elif not redis_too and r < 0.96:
            out.append(frame(name, b"K" * 513) if name.lower() != b"set"
                       else frame(name, b"K" * 513, b"v"))            # over max_key_size
        elif not redis_too and r < 0.98:
            out.append(frame(b"SET", k, b"v" * (16 * 1024 + 1)))      # over max_value_size
        elif not redis_too:
            out.append(frame(name, b"") if name.lower() != b"set" else frame(name, b"", b"v"))
    return out


def replies(server, pieces: list[bytes], rnd: random.Random) -> bytes:
    """Send ``pieces`` joined and cut at random places (a pause between the
    parts, so the server reads them apart), then read every reply."""
    data = b"".join(pieces) + END
    s = server.raw()
    try:
        pos = 0
        while pos < len(data):
            step = rnd.choice([1, 7, 64, 1000, len(data)])
            s.sendall(data[pos:pos + step])
            pos += step
            if rnd.random() < 0.2:
                time.sleep(0.001)
        got = b""
        deadline = time.monotonic() + 30
        while not got.endswith(END_REPLY):
            assert time.monotonic() < deadline, got[-200:]
            chunk = s.recv(1 << 16)
            assert chunk, "the server closed the connection"
            got += chunk
        return got
    finally:
        s.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    if not kernel.COMPILED:
        pytest.skip("the hot path needs the compiled kernel (pure-Python run)")
    base = tmp_path_factory.mktemp("hot")
    with start_fusedb(base / "compiled", servers=1) as compiled, \
            start_fusedb(base / "pure", servers=1,
                         env=fusedb_env(FUSEDB_NO_EXTENSIONS="1",
                                        FUSEDB_REQUIRE_EXTENSIONS="")) as pure, \
            start_redis(base / "redis") as redis:
        yield compiled, pure, redis


@pytest.mark.parametrize("seed", range(6))
def test_hot_and_general_paths_answer_byte_for_byte(servers, seed):
    compiled, pure, redis = servers
    for redis_too in (True, False):
        pieces = stream(random.Random(seed), 400, redis_too)
        for srv in (compiled, pure, redis) if redis_too else (compiled, pure):
            with srv.raw() as s:
                s.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
                assert s.recv(100) == b"+OK\r\n"
        got = [replies(srv, pieces, random.Random(seed * 7 + i))
               for i, srv in enumerate((compiled, pure) + ((redis,) if redis_too else ()))]
        assert got[0] == got[1], (got[0][:300], got[1][:300])
        if redis_too:
            assert got[0] == got[2]


def test_a_request_whose_kernel_call_raises_after_writing_is_not_run_again(tmp_path):
    """In sync durability a write can fail after it is in the buffer (the WAL's
    fsync fails: DiskError). The hot path takes that request and reports its
    error; handing it to the general path would apply the INCR twice (a
    reviewer's finding)."""
    if not kernel.COMPILED:
        pytest.skip("the hot path needs the compiled kernel (pure-Python run)")
    import errno

    import fusedb
    from fusedb.core import failpoints
    from fusedb.resp._hot import HotPath

    def eio():
        raise OSError(errno.EIO, "injected EIO")

    frame_ = frame(b"INCR", b"c")
    with fusedb.open(str(tmp_path / "db"), durability="sync") as db:
        db.put(b"c", b"10")
        hot = HotPath(db)
        out: list = []
        with failpoints.armed("wal.fsync", eio):
            n = hot.run(frame_ + frame(b"GET", b"c"), 2, out)
        assert n == len(frame_) and out == []       # taken, and the run stopped there
        assert isinstance(hot.error, fusedb.DiskError)
        hot.error = None
        assert db.get(b"c") == b"11"                 # applied once


@pytest.mark.parametrize("payload", [
    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$01\r\nv\r\n",
    b"*03\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
    b"*2\r\n$03\r\nGET\r\n$1\r\nk\r\n",
])
def test_lengths_with_leading_zeros_are_protocol_errors_as_in_redis(servers, payload):
    """Redis's string2ll refuses "01": a frame with such a length is a protocol
    error (the connection closes), not a command, on the hot path too."""
    compiled, _pure, redis = servers
    got = []
    for srv in (compiled, redis):
        with srv.raw() as s:
            s.sendall(payload)
            data = b""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            got.append(data)
    assert got[0] == got[1] and got[0].startswith(b"-ERR Protocol error")
