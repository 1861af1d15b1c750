"""Keyspace commands against real Redis 7.0.15 and the FuseDB daemon, RESP2 and
RESP3 (the ``target`` fixture): TYPE RENAME RENAMENX KEYS SCAN DBSIZE FLUSHDB
FLUSHALL. Redis returns keys in hash order and FuseDB in key order, so key
lists are compared sorted. FuseDB's SCAN cursor form and its reserved keys
are asserted against FuseDB only (``fdb``)."""

from __future__ import annotations

import time

import pytest

import fusedb
from fusedb.resp.commands import dispatch
from fusedb.resp.state import Context, Server
from resp.cmd_helpers import err, fusedb_client_fixture, raw

fdb = fusedb_client_fixture()

KEYS = [b"a:1", b"a:2", b"a:10", b"b:1", b"w", b"z", b"h*o", b"h?o", b"hello", b"hallo",
        b"[x]", b"\xff\x01", b"a\\b"]


def fill(r) -> None:
    r.execute_command("MSET", *[x for k in KEYS for x in (k, b"v")])


def test_type(target):
    r = raw(target)
    r.execute_command("SET", "s", "v")
    r.execute_command("INCR", "n")
    assert r.execute_command("TYPE", "s") == b"string"
    assert r.execute_command("TYPE", "n") == b"string"
    assert r.execute_command("TYPE", "missing") == b"none"
    assert target.r.type("s") == b"string"
    assert err(r, "TYPE") == "wrong number of arguments for 'type' command"


def test_rename(target):
    r = raw(target)
    assert err(r, "RENAME", "missing", "x") == "no such key"
    assert err(r, "RENAME", "missing", "missing") == "no such key"
    r.execute_command("SET", "s", "v")
    assert r.execute_command("RENAME", "s", "s") == b"OK"
    assert r.execute_command("RENAME", "s", "t") == b"OK"
    assert r.execute_command("MGET", "s", "t") == [None, b"v"]
    r.execute_command("SET", "u", "w", "EX", "100")
    assert r.execute_command("RENAME", "u", "t") == b"OK"    # overwrites, moves the TTL
    assert r.execute_command("GET", "t") == b"w"
    assert r.execute_command("TTL", "t") == 100
    r.execute_command("INCRBY", "c", "5")
    assert r.execute_command("RENAME", "c", "d") == b"OK"
    assert r.execute_command("INCR", "d") == 6
    assert err(r, "RENAME", "d") == "wrong number of arguments for 'rename' command"


def test_renamenx(target):
    r = raw(target)
    assert err(r, "RENAMENX", "missing", "x") == "no such key"
    r.execute_command("MSET", "a", "1", "b", "2")
    assert r.execute_command("RENAMENX", "a", "b") == 0
    assert r.execute_command("RENAMENX", "a", "a") == 0
    assert r.execute_command("RENAMENX", "a", "c") == 1
    assert r.execute_command("MGET", "a", "b", "c") == [None, b"2", b"1"]


@pytest.mark.parametrize("pattern, want", [
    (b"*", KEYS), (b"**", KEYS), (b"a:*", [b"a:1", b"a:2", b"a:10"]), (b"a:?", [b"a:1", b"a:2"]),
    (b"a:[0-1]*", [b"a:1", b"a:10"]), (b"a:[^1]", [b"a:2"]), (b"a:[2-0]", [b"a:1", b"a:2"]),
    (b"*1", [b"a:1", b"b:1"]), (b"?", [b"w", b"z"]), (b"[wz]", [b"w", b"z"]),
    (b"h\\*o", [b"h*o"]), (b"h\\?o", [b"h?o"]), (b"h?llo", [b"hello", b"hallo"]),
    (b"h[ae]llo", [b"hello", b"hallo"]), (b"h[^e]llo", [b"hallo"]), (b"\\[x]", [b"[x]"]),
    (b"[", []), (b"a:[", []), (b"a:[\\1]", [b"a:1"]), (b"a\\\\b", [b"a\\b"]),
    (b"\xff*", [b"\xff\x01"]), (b"nomatch", []), (b"w", [b"w"]), (b"*:1*", [b"a:1", b"a:10",
                                                                             b"b:1"]),
])
def test_keys_patterns(target, pattern, want):
    r = raw(target)
    fill(r)
    assert sorted(r.execute_command("KEYS", pattern)) == sorted(want)


def test_keys_and_dbsize(target):
    r = raw(target)
    assert r.execute_command("KEYS", "*") == []
    assert r.execute_command("DBSIZE") == 0
    fill(r)
    assert r.execute_command("DBSIZE") == len(KEYS)
    r.execute_command("SET", "gone", "v", "PX", "1")
    r.execute_command("SET", "gone2", "v", "EXAT", "1")
    time.sleep(0.05)
    assert sorted(target.r.keys()) == sorted(KEYS)     # expired keys are not listed
    assert err(r, "KEYS") == "wrong number of arguments for 'keys' command"
    assert err(r, "DBSIZE", "x") == "wrong number of arguments for 'dbsize' command"


def scan_all(r, *options) -> list:
    """Every key a full SCAN returns (cursor to 0), with its cursors."""
    out, cursor, rounds = [], b"0", 0
    while True:
        cursor, keys = r.execute_command("SCAN", cursor, *options)
        out += keys
        rounds += 1
        assert rounds < 10_000
        if cursor == b"0":
            return out


def test_scan_returns_every_key_once(target):
    r = raw(target)
    keys = [b"k:%04d" % i for i in range(300)] + KEYS
    r.execute_command("MSET", *[x for k in keys for x in (k, b"v")])
    for options in ((), ("COUNT", "7"), ("COUNT", "1000"), ("count", "1")):
        got = scan_all(r, *options)
        assert sorted(got) == sorted(keys)
    assert sorted(scan_all(r, "MATCH", "k:01*", "COUNT", "5")) == \
        [b"k:%04d" % i for i in range(100, 200)]
    assert sorted(scan_all(r, "MATCH", "a:?")) == [b"a:1", b"a:2"]
    assert sorted(scan_all(r, "TYPE", "string", "MATCH", "w")) == [b"w"]
    assert scan_all(r, "TYPE", "hash") == []
    assert scan_all(r, "TYPE", "nosuchtype", "COUNT", "500") == []
    assert sorted(target.r.scan_iter(match="k:029*")) == [b"k:%04d" % i for i in range(290, 300)]


def test_scan_sees_every_key_that_stays_while_others_change(target):
    """SCAN's guarantee (redis.io/commands/scan): a key present for the whole
    iteration is returned; keys added or deleted meanwhile may or may not be."""
    r = raw(target)
    stay = [b"s:%03d" % i for i in range(200)]
    r.execute_command("MSET", *[x for k in stay for x in (k, b"v")])
    seen, cursor, n = set(), b"0", 0
    while True:
        cursor, keys = r.execute_command("SCAN", cursor, "COUNT", "10")
        seen.update(keys)
        r.execute_command("SET", b"t:%03d" % n, "v")        # added meanwhile
        r.execute_command("SET", b"a:%03d" % n, "v")
        r.execute_command("DEL", b"t:%03d" % (n - 1))       # deleted meanwhile
        n += 1
        assert n < 1000
        if cursor == b"0":
            break
    assert set(stay) <= seen


@pytest.mark.parametrize("args, message", [
    (("x",), "invalid cursor"), ((" 1",), "invalid cursor"), (("1x",), "invalid cursor"),
    (("0", "COUNT", "0"), "syntax error"), (("0", "COUNT", "-1"), "syntax error"),
    (("0", "COUNT", "abc"), "value is not an integer or out of range"),
    (("0", "foo"), "syntax error"), (("0", "MATCH"), "syntax error"),
    (("0", "TYPE"), "syntax error"), (("0", "COUNT", "5", "bar", "1"), "syntax error"),
])
def test_scan_errors(target, args, message):
    r = raw(target)
    assert err(r, "SCAN", *args) == message


def test_flushdb_flushall(target):
    r = raw(target)
    fill(r)
    assert err(r, "FLUSHDB", "foo") == "syntax error"
    assert err(r, "FLUSHDB", "sync", "x") == "syntax error"
    assert err(r, "FLUSHALL", "now") == "syntax error"
    assert r.execute_command("DBSIZE") == len(KEYS)
    assert r.execute_command("FLUSHDB") == b"OK"
    assert r.execute_command("DBSIZE") == 0
    fill(r)
    assert r.execute_command("FLUSHALL", "ASYNC") == b"OK"
    assert r.execute_command("KEYS", "*") == []
    fill(r)
    assert r.execute_command("flushdb", "sync") == b"OK"
    assert r.execute_command("DBSIZE") == 0
    assert target.r.flushdb() is True


def test_keyspace_commands_inside_multi(target):
    r = target.r
    r.mset({"a": "1", "b": "2"})
    p = r.pipeline(transaction=True)
    p.keys("*")
    p.dbsize()
    p.scan(0, count=100)
    p.rename("a", "c")
    p.exists("a", "c")
    p.flushdb()
    p.dbsize()
    keys, size, (cursor, scanned), renamed, exists, flushed, after = p.execute()
    assert sorted(keys) == [b"a", b"b"] and size == 2
    assert cursor == 0 and sorted(scanned) == [b"a", b"b"]
    assert renamed is True and exists == 1 and flushed is True and after == 0


# -- FuseDB's documented deviations -------------------------------------------------------

def test_scan_cursor_is_the_last_key(fdb):
    """The cursor is the decimal of b"\\x01" + the last key returned (stateless:
    any server process resumes it); keys come in key order."""
    fdb.execute_command("MSET", "a", "1", "b", "2", "c", "3")
    cursor, keys = fdb.execute_command("SCAN", "0", "COUNT", "2")
    assert keys == [b"a", b"b"]
    assert cursor == str(int.from_bytes(b"\x01b", "big")).encode()
    assert fdb.execute_command("SCAN", cursor, "COUNT", "2") == [b"0", [b"c"]]
    assert err(fdb, "SCAN", "5") == "invalid cursor"     # not a cursor FuseDB made


def test_scan_cursor_of_a_long_key(tmp_path):
    """A last key over 1700 bytes (max_key_size allows 4096) is cut (marker
    2): the scan resumes at the cut, inclusive, so keys past it may come
    again; nothing is skipped. In-process: the test daemon keeps the default
    512-byte keys."""
    db = fusedb.open(str(tmp_path / "db"), max_key_size=4096)
    try:
        ctx = Context(Server(db=db))
        long_keys = [b"L" * 1800 + b"%d" % i for i in range(3)]
        assert dispatch(ctx, [b"MSET", *[x for k in long_keys for x in (k, b"v")]]) == b"OK"
        cursor, keys = dispatch(ctx, [b"SCAN", b"0", b"COUNT", b"1"])
        assert keys == long_keys[:1]
        assert int(cursor).to_bytes(1701, "big") == b"\x02" + b"L" * 1700
        rest = []
        while cursor != b"0":
            cursor, keys = dispatch(ctx, [b"SCAN", cursor, b"COUNT", b"5"])
            rest += keys
        assert sorted(rest) == long_keys
    finally:
        db.close()


def test_reserved_keys_are_hidden(fdb):
    """Keys starting with \\xff\\xff are the server's (the script store):
    KEYS, SCAN, DBSIZE and FLUSHDB leave them out."""
    fdb.execute_command("SET", b"\xff\xffmine", "v")
    fdb.execute_command("SET", "k", "v")
    assert fdb.execute_command("KEYS", "*") == [b"k"]
    assert fdb.execute_command("SCAN", "0") == [b"0", [b"k"]]
    assert fdb.execute_command("DBSIZE") == 1
    assert fdb.execute_command("FLUSHDB") == b"OK"
    assert fdb.execute_command("GET", b"\xff\xffmine") == b"v"
    fdb.execute_command("DEL", b"\xff\xffmine")
