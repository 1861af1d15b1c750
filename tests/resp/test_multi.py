"""MULTI, EXEC, DISCARD against real redis-server 7.0.15 and a FuseDB daemon
(the ``target`` fixture: {redis, fusedb} x RESP {2, 3}; tests/resp/conftest.py).

Every expected reply is asserted on both servers: Redis's error texts, the
QUEUED replies, EXECABORT after a command refused at queue time, a runtime
error as its element of EXEC's array with the other commands applied (no
rollback), and isolation: a concurrent reader on another connection (on
FuseDB, the other server process too) never sees half of a transaction.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis


class Conn:
    """One redis-py connection, commands sent one by one, replies as parsed
    from the wire (no redis-py response callbacks; a pooled client could also
    switch connections between MULTI and EXEC)."""

    def __init__(self, target):
        self.conn = target.client().connection_pool.get_connection()

    def __call__(self, *args):
        """The reply, or ("error", text) (redis-py drops a leading ``ERR ``)."""
        self.conn.send_command(*args)
        try:
            return self.conn.read_response()
        except redis.ResponseError as e:
            return ("error", str(e))


@pytest.fixture
def c(target):
    target.r.flushall()
    return Conn(target)


def test_exec_runs_the_queue(c):
    assert c("MULTI") == b"OK"
    assert c("SET", "a", "1") == b"QUEUED"
    assert c("INCR", "a") == b"QUEUED"
    assert c("GET", "a") == b"QUEUED"
    assert c("PING") == b"QUEUED"
    assert c("EXEC") == [b"OK", 2, b"2", b"PONG"]
    assert c("GET", "a") == b"2"


def test_exec_reply_values_raw(target):
    """The EXEC array as the wire has it (no redis-py callbacks)."""
    target.r.flushall()
    with target.raw() as s:
        s.sendall(b"MULTI\r\nSET a 1\r\nINCR a\r\nGET a\r\nGET nosuch\r\nPING\r\nEXEC\r\n")
        want_tail = b"*5\r\n+OK\r\n:2\r\n$1\r\n2\r\n$-1\r\n+PONG\r\n"
        got = b""
        deadline = time.monotonic() + 10
        while not got.endswith(want_tail) and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    assert got == b"+OK\r\n" + b"+QUEUED\r\n" * 5 + want_tail


def test_errors_outside_a_transaction(c):
    assert c("EXEC") == ("error", "EXEC without MULTI")
    assert c("DISCARD") == ("error", "DISCARD without MULTI")
    c("MULTI")
    assert c("MULTI") == ("error", "MULTI calls can not be nested")
    assert c("SET", "k", "v") == b"QUEUED"                 # the transaction goes on
    assert c("EXEC") == [b"OK"]
    assert c("GET", "k") == b"v"


def test_a_queue_time_error_aborts_exec(c):
    c("SET", "k", "old")
    c("MULTI")
    assert c("SET", "k", "new") == b"QUEUED"
    assert c("NOSUCHCOMMAND", "x")[1].startswith("unknown command 'NOSUCHCOMMAND'")
    assert c("GET") == ("error", "wrong number of arguments for 'get' command")
    assert c("EXEC") == ("error", "Transaction discarded because of previous errors.")
    assert c("GET", "k") == b"old"                      # nothing ran
    assert c("EXEC") == ("error", "EXEC without MULTI")  # and the state is gone


def test_runtime_errors_are_elements_and_nothing_rolls_back(c):
    c("SET", "s", "abc")
    c("MULTI")
    for cmd in (("SET", "a", "1"), ("INCR", "s"), ("INCR", "a"), ("SET", "b", "x", "XX")):
        assert c(*cmd) == b"QUEUED"
    got = c("EXEC")
    assert got[0] == b"OK" and got[2] == 2 and got[3] is None
    assert isinstance(got[1], redis.ResponseError)
    assert str(got[1]) == "value is not an integer or out of range"
    assert c("MGET", "a", "s", "b") == [b"2", b"abc", None]


def test_discard(c):
    c("SET", "k", "old")
    c("MULTI")
    c("SET", "k", "new")
    assert c("DISCARD") == b"OK"
    assert c("GET", "k") == b"old"
    assert c("DISCARD") == ("error", "DISCARD without MULTI")


def test_empty_exec(c):
    c("MULTI")
    assert c("EXEC") == []


def test_eval_inside_multi(c):
    c("MULTI")
    c("SET", "n", "5")
    c("EVAL", "return redis.call('incrby', KEYS[1], ARGV[1])", 1, "n", 10)
    c("EVAL", "return redis.call('incr', 'undeclared')", 0)
    assert c("EXEC") == [b"OK", 15, 1]


def test_redis_py_transaction_pipeline(target):
    r = target.r
    r.flushall()
    with r.pipeline(transaction=True) as p:
        p.set("a", 1).incrby("a", 4).get("a").delete("a").exists("a")
        assert p.execute() == [True, 5, b"5", 1, 0]


def test_exec_is_isolated_from_other_connections(target):
    """A writer EXECs [INCR a, INCR b] while readers on other connections EXEC
    [GET a, GET b]: a reader never sees one incremented without the other.
    (The readers use EXEC, not MGET: FuseDB's MGET reads key by key.)"""
    target.r.flushall()
    target.r.mset({"a": 0, "b": 0})
    stop = threading.Event()
    torn = []

    def read():
        r = target.client()
        while not stop.is_set():
            with r.pipeline(transaction=True) as p:
                a, b = p.get("a").get("b").execute()
            if a != b:
                torn.append((a, b))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        w = target.client()
        for _ in range(300):
            with w.pipeline(transaction=True) as p:
                p.incr("a").incr("b")
                a, b = p.execute()
                assert a == b
    finally:
        stop.set()
        for t in readers:
            t.join(60)
    assert not torn, f"a reader saw half a transaction: {torn[:5]}"
    assert target.r.mget("a", "b") == [b"300", b"300"]
