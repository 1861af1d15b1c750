"""String and counter commands against real Redis 7.0.15 and the FuseDB daemon,
RESP2 and RESP3 (the ``target`` fixture): the same replies and the same error
texts. FuseDB's documented deviations (empty key, value size limit) are
asserted against FuseDB only (``fdb``)."""

from __future__ import annotations

import time

import pytest
from resp.cmd_helpers import err, fusedb_client_fixture, raw

fdb = fusedb_client_fixture()


def test_get_set_plain(target):
    r = raw(target)
    assert r.execute_command("GET", "k") is None
    assert r.execute_command("SET", "k", "v") == b"OK"
    assert r.execute_command("GET", "k") == b"v"
    assert r.execute_command("SET", "k", b"\x00\xffbin\r\n") == b"OK"
    assert r.execute_command("GET", "k") == b"\x00\xffbin\r\n"
    assert r.execute_command("set", "k", "") == b"OK"
    assert r.execute_command("get", "k") == b""
    assert err(r, "GET") == "wrong number of arguments for 'get' command"
    assert err(r, "GET", "a", "b") == "wrong number of arguments for 'get' command"
    assert err(r, "SET", "k") == "wrong number of arguments for 'set' command"


@pytest.mark.parametrize("args, message", [
    (("EX", "0"), "invalid expire time in 'set' command"),
    (("EX", "-5"), "invalid expire time in 'set' command"),
    (("PX", "0"), "invalid expire time in 'set' command"),
    (("EX", "9223372036854775"), "invalid expire time in 'set' command"),
    (("PX", "9223372036854775807"), "invalid expire time in 'set' command"),
    (("EX", "abc"), "value is not an integer or out of range"),
    (("EX", "10", "KEEPTTL"), "syntax error"),
    (("NX", "XX"), "syntax error"),
    (("PX", "100", "EX", "1"), "syntax error"),
    (("EXAT", "100", "PXAT", "1"), "syntax error"),
    (("foo",), "syntax error"),
    (("EX",), "syntax error"),
    (("PERSIST",), "syntax error"),
])
def test_set_option_errors(target, args, message):
    r = raw(target)
    assert err(r, "SET", "k", "v", *args) == message
    assert r.execute_command("EXISTS", "k") == 0


def test_set_nx_xx_get(target):
    r = raw(target)
    assert r.execute_command("SET", "k", "v", "XX") is None
    assert r.execute_command("SET", "k", "v", "nx") == b"OK"
    assert r.execute_command("SET", "k", "w", "NX") is None
    assert r.execute_command("SET", "k", "w", "XX", "GET") == b"v"
    assert r.execute_command("SET", "k", "x", "NX", "GET") == b"w"     # not set
    assert r.execute_command("GET", "k") == b"w"
    assert r.execute_command("SET", "new", "x", "NX", "GET") is None   # set
    assert r.execute_command("GET", "new") == b"x"
    assert r.execute_command("SET", "none", "x", "XX", "GET") is None  # not set
    assert r.execute_command("EXISTS", "none") == 0
    assert r.execute_command("SET", "k", "y", "GET", "GET") == b"w"


def test_set_expiry_options(target):
    r = raw(target)
    assert r.execute_command("SET", "k", "v", "EX", "100") == b"OK"
    assert r.execute_command("TTL", "k") == 100
    assert r.execute_command("SET", "k", "v", "EX", "10", "EX", "20") == b"OK"  # last wins
    assert r.execute_command("TTL", "k") == 20
    assert r.execute_command("SET", "k", "w", "KEEPTTL") == b"OK"
    assert r.execute_command("TTL", "k") == 20
    assert r.execute_command("SET", "k", "w") == b"OK"          # a plain SET drops the TTL
    assert r.execute_command("TTL", "k") == -1
    assert r.execute_command("SET", "k", "v", "PX", "5000") == b"OK"
    assert 4000 <= r.execute_command("PTTL", "k") <= 5000
    at = int(time.time()) + 1000
    assert r.execute_command("SET", "k", "v", "EXAT", at) == b"OK"
    assert r.execute_command("EXPIRETIME", "k") == at
    assert r.execute_command("SET", "k", "v", "PXAT", at * 1000 + 400) == b"OK"
    assert r.execute_command("PEXPIRETIME", "k") == at * 1000 + 400
    assert r.execute_command("SET", "k", "v", "EXAT", "1") == b"OK"  # in the past: gone
    assert r.execute_command("GET", "k") is None
    assert r.execute_command("SET", "k", "v", "PXAT", "1", "GET") is None
    assert r.execute_command("EXISTS", "k") == 0
    assert r.execute_command("SET", "k", "v", "PX", "100") == b"OK"
    time.sleep(0.3)
    assert r.execute_command("GET", "k") is None


def test_set_through_redis_py(target):
    r = target.r
    assert r.set("a", "1", ex=100) is True
    assert r.set("a", "2", nx=True) is None
    assert r.set("a", "2", xx=True, get=True, ex=100) == b"1"
    assert r.set("a", "3", keepttl=True) is True
    assert 0 < r.ttl("a") <= 100
    assert r.get("a") == b"3"
    assert r.setnx("a", "x") is False
    assert r.setnx("b", "x") is True
    assert r.set("c", "v", px=50000) is True
    assert 49 <= r.ttl("c") <= 50
    assert r.mget("a", "b", "nope") == [b"3", b"x", None]


def test_setnx_setex_psetex(target):
    r = raw(target)
    assert r.execute_command("SETNX", "k", "v") == 1
    assert r.execute_command("SETNX", "k", "w") == 0
    assert r.execute_command("GET", "k") == b"v"
    assert err(r, "SETEX", "k", "-1", "v") == "invalid expire time in 'setex' command"
    assert err(r, "SETEX", "k", "0", "v") == "invalid expire time in 'setex' command"
    assert err(r, "SETEX", "k", "abc", "v") == "value is not an integer or out of range"
    assert err(r, "PSETEX", "k", "0", "v") == "invalid expire time in 'psetex' command"
    assert err(r, "SETEX", "k", "10") == "wrong number of arguments for 'setex' command"
    assert r.execute_command("SETEX", "k", "10", "w") == b"OK"
    assert r.execute_command("TTL", "k") == 10
    assert r.execute_command("PSETEX", "k", "2500", "x") == b"OK"
    assert 2000 <= r.execute_command("PTTL", "k") <= 2500
    assert r.execute_command("GET", "k") == b"x"


def test_getset_getdel(target):
    r = raw(target)
    assert r.execute_command("GETSET", "k", "v") is None
    assert r.execute_command("SET", "k", "v", "EX", "100") == b"OK"
    assert r.execute_command("GETSET", "k", "w") == b"v"
    assert r.execute_command("TTL", "k") == -1         # GETSET drops the TTL
    assert r.execute_command("GETDEL", "k") == b"w"
    assert r.execute_command("GETDEL", "k") is None
    assert r.execute_command("EXISTS", "k") == 0


def test_getex(target):
    r = raw(target)
    assert r.execute_command("GETEX", "k") is None
    assert r.execute_command("GETEX", "k", "EX", "0") is None   # missing: not validated
    assert r.execute_command("SET", "k", "v") == b"OK"
    assert r.execute_command("GETEX", "k") == b"v"
    assert err(r, "GETEX", "k", "EX", "0") == "invalid expire time in 'getex' command"
    assert err(r, "GETEX", "k", "PERSIST", "EX", "1") == "syntax error"
    assert err(r, "GETEX", "k", "KEEPTTL") == "syntax error"
    assert err(r, "GETEX", "k", "NX") == "syntax error"
    assert err(r, "GETEX", "k", "foo") == "syntax error"
    assert r.execute_command("GETEX", "k", "EX", "100") == b"v"
    assert r.execute_command("TTL", "k") == 100
    assert r.execute_command("GETEX", "k", "PX", "50000") == b"v"
    assert 49000 <= r.execute_command("PTTL", "k") <= 50000
    assert r.execute_command("GETEX", "k", "PERSIST") == b"v"
    assert r.execute_command("TTL", "k") == -1
    at = int(time.time()) + 500
    assert r.execute_command("GETEX", "k", "EXAT", at) == b"v"
    assert r.execute_command("EXPIRETIME", "k") == at
    assert r.execute_command("GETEX", "k", "PXAT", "1") == b"v"  # past: deleted
    assert r.execute_command("EXISTS", "k") == 0


def test_mget_mset_msetnx(target):
    r = raw(target)
    assert r.execute_command("MSET", "a", "1", "b", "2") == b"OK"
    assert r.execute_command("MGET", "a", "b", "c", "a") == [b"1", b"2", None, b"1"]
    assert err(r, "MSET", "a") == "wrong number of arguments for 'mset' command"
    assert err(r, "MSET", "a", "1", "b") == "wrong number of arguments for 'mset' command"
    assert err(r, "MSETNX", "a", "1", "b") == "wrong number of arguments for 'msetnx' command"
    assert err(r, "MGET") == "wrong number of arguments for 'mget' command"
    assert r.execute_command("MSETNX", "a", "9", "s", "2") == 0
    assert r.execute_command("MGET", "a", "s") == [b"1", None]
    assert r.execute_command("MSETNX", "x", "1", "y", "2") == 1
    assert r.execute_command("MGET", "x", "y") == [b"1", b"2"]
    assert r.execute_command("SET", "t", "v", "EX", "100") == b"OK"
    assert r.execute_command("MSET", "t", "w") == b"OK"
    assert r.execute_command("TTL", "t") == -1          # MSET drops the TTL


def test_del_unlink_exists(target):
    r = raw(target)
    assert r.execute_command("MSET", "a", "1", "b", "2", "c", "3") == b"OK"
    assert r.execute_command("EXISTS", "a", "a", "zz", "b") == 3
    assert r.execute_command("DEL", "a") == 1
    assert r.execute_command("DEL", "a") == 0
    assert r.execute_command("DEL", "b", "b", "zz") == 1
    assert r.execute_command("UNLINK", "c", "b") == 1
    assert r.execute_command("EXISTS", "a", "b", "c") == 0
    assert err(r, "DEL") == "wrong number of arguments for 'del' command"
    assert err(r, "EXISTS") == "wrong number of arguments for 'exists' command"


def test_append_strlen(target):
    r = raw(target)
    assert r.execute_command("STRLEN", "k") == 0
    assert r.execute_command("APPEND", "k", "hello") == 5
    assert r.execute_command("APPEND", "k", " world") == 11
    assert r.execute_command("GET", "k") == b"hello world"
    assert r.execute_command("STRLEN", "k") == 11
    assert r.execute_command("SET", "n", "5", "EX", "100") == b"OK"
    assert r.execute_command("APPEND", "n", "0") == 2          # keeps the TTL
    assert r.execute_command("INCR", "n") == 51
    assert r.execute_command("TTL", "n") == 100
    assert r.execute_command("STRLEN", "n") == 2


def test_incr_family(target):
    r = raw(target)
    assert r.execute_command("INCR", "n") == 1
    assert r.execute_command("INCRBY", "n", "41") == 42
    assert r.execute_command("DECR", "n") == 41
    assert r.execute_command("DECRBY", "n", "-9") == 50
    assert r.execute_command("INCRBY", "n", "-100") == -50
    assert r.execute_command("GET", "n") == b"-50"
    assert r.execute_command("SET", "t", "7", "EX", "100") == b"OK"
    assert r.execute_command("INCR", "t") == 8
    assert r.execute_command("TTL", "t") == 100                # INCR keeps the TTL
    assert r.execute_command("SET", "m", "9223372036854775807") == b"OK"
    assert err(r, "INCR", "m") == "increment or decrement would overflow"
    assert r.execute_command("INCRBY", "m", "-1") == 9223372036854775806
    assert r.execute_command("SET", "m", "-9223372036854775808") == b"OK"
    assert err(r, "DECR", "m") == "increment or decrement would overflow"
    assert err(r, "DECRBY", "n", "-9223372036854775808") == "decrement would overflow"
    assert err(r, "INCRBY", "n", "9223372036854775808") == \
        "value is not an integer or out of range"
    assert err(r, "INCR") == "wrong number of arguments for 'incr' command"


@pytest.mark.parametrize("value", ["041", "+4", " 4", "4 ", "-0", "1e3", "", "00", "abc",
                                   "1.5", "9223372036854775808"])
def test_incr_refuses_what_redis_refuses(target, value):
    r = raw(target)
    assert r.execute_command("SET", "n", value) == b"OK"
    assert err(r, "INCR", "n") == "value is not an integer or out of range"
    assert err(r, "INCRBY", "x", value) == "value is not an integer or out of range"
    assert r.execute_command("GET", "n") == value.encode()
    assert r.execute_command("EXISTS", "x") == 0


# (stored value or None, increment) -> Redis's reply, taken from redis-server 7.0.15
INCRBYFLOAT = [
    (None, "1.5", b"1.5"), ("10.5", "0.1", b"10.6"), ("10", "1", b"11"),
    ("1.1", "-1.2", b"-0.1"), ("17179869184.5", "1", b"17179869185.5"),
    ("5.0e3", "0", b"5000"), (None, "1.1", b"1.1"), ("3", "-3", b"0"),
    ("0.1", "0.2", b"0.3"), (None, ".5", b"0.5"), (None, "5.", b"5"), (None, "-.5", b"-0.5"),
    (None, "0x10", b"16"), (None, "123456789012345678901234567890",
                            b"123456789012345678899921813504"),
    (None, "1.23456789012345678901234567890", b"1.23456789012345679"), ("-1e-20", "0", b"0"),
    ("17179869184", "17179869184", b"34359738368"),
    ("0.024390243902439025", "-0.024390243902439025", b"0"),        # no negative zero
    (None, "1e308", b"99999999999999999996685879655845645660560099847415567207797047994921734868"
                    b"83806187210012692188853932044674722505401322315213474959396058359742081443"
                    b"01964187679591000196031907786631096045071066679391533957889389145605435630"
                    b"61268364901618630217086589253444881623791300855757318142424510452728255046"
                    b"343928578048"),
]


@pytest.mark.parametrize("stored, incr, want", INCRBYFLOAT)
def test_incrbyfloat_formats_as_redis(target, stored, incr, want):
    r = raw(target)
    if stored is not None:
        r.execute_command("SET", "f", stored)
    assert r.execute_command("INCRBYFLOAT", "f", incr) == want
    assert r.execute_command("GET", "f") == want


@pytest.mark.parametrize("stored, incr, message", [
    (None, "abc", "value is not a valid float"), (None, "1e5000", "value is not a valid float"),
    (None, "1e-5000", "value is not a valid float"), (None, " 1", "value is not a valid float"),
    (None, "1 ", "value is not a valid float"), (None, "nan", "value is not a valid float"),
    (None, "", "value is not a valid float"),
    (None, "inf", "increment would produce NaN or Infinity"),
    ("0", "+inf", "increment would produce NaN or Infinity"),
    ("    11", "1.0", "value is not a valid float"),
    ("11    ", "1.0", "value is not a valid float"),
    (" 11 ", "1.0", "value is not a valid float"), ("1\x002", "1", "value is not a valid float"),
    ("inf", "1", "increment would produce NaN or Infinity"),
    ("a b", "1", "value is not a valid float"),
    ("1.1e4932", "1e4932", "increment would produce NaN or Infinity"),
    ("1.2e4932", "1", "value is not a valid float"),
])
def test_incrbyfloat_errors(target, stored, incr, message):
    r = raw(target)
    if stored is not None:
        r.execute_command("SET", "f", stored)
    assert err(r, "INCRBYFLOAT", "f", incr) == message
    assert r.execute_command("GET", "f") == (None if stored is None else stored.encode())


def test_incrbyfloat_keeps_ttl_and_redis_py_float(target):
    r = target.r
    r.set("f", "1", ex=100)
    assert r.incrbyfloat("f", 0.25) == 1.25
    assert r.ttl("f") == 100
    assert r.incr("f2") == 1 and r.incrby("f2", 4) == 5 and r.decr("f2") == 4


def test_unknown_command_keeps_the_connection(target):
    r = raw(target)
    assert err(r, "FOO") == "unknown command 'FOO', with args beginning with: "
    assert err(r, "foo", "a", "b") == "unknown command 'foo', with args beginning with: 'a' 'b' "
    long = "x" * 200
    assert err(r, "nosuch" + long, long, "y") == (
        "unknown command '" + ("nosuch" + long)[:128] + "', with args beginning with: '"
        + long[:128] + "' ")
    assert err(r, "nosuch", "a\r\nb") == \
        "unknown command 'nosuch', with args beginning with: 'a  b' "
    assert r.execute_command("SET", "k", "v") == b"OK"


# -- FuseDB's documented deviations -------------------------------------------------------

def test_commands_fusedb_lacks_are_unknown(fdb):
    assert err(fdb, "LPUSH", "l", "x") == \
        "unknown command 'LPUSH', with args beginning with: 'l' 'x' "
    assert err(fdb, "subscribe", "ch") == \
        "unknown command 'subscribe', with args beginning with: 'ch' "
    assert fdb.execute_command("SET", "k", "v") == b"OK"


def test_empty_key_is_refused(fdb):
    assert err(fdb, "SET", "", "v") == "key length 0 is outside 1..512 bytes"
    assert err(fdb, "GET", "") == "key length 0 is outside 1..512 bytes"
    assert err(fdb, "SET", "k" * 513, "v") == "key length 513 is outside 1..512 bytes"


def test_value_over_max_value_size_is_refused(fdb):
    big = b"x" * (16 * 1024 + 1)
    assert err(fdb, "SET", "k", big) == "value length 16385 is over max_value_size=16384"
    assert fdb.execute_command("SET", "k", b"x" * 16384) == b"OK"
    assert err(fdb, "APPEND", "k", "y") == "value length 16385 is over max_value_size=16384"
    assert fdb.execute_command("STRLEN", "k") == 16384
