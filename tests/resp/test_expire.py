"""Expiry commands against real Redis 7.0.15 and the FuseDB daemon, RESP2 and
RESP3 (the ``target`` fixture): EXPIRE PEXPIRE EXPIREAT PEXPIREAT with NX XX
GT LT, TTL PTTL EXPIRETIME PEXPIRETIME PERSIST, and which commands keep or
drop a TTL."""

from __future__ import annotations

import time

import pytest
from resp.cmd_helpers import err, raw


@pytest.mark.parametrize("args, message", [
    (("10", "nx", "gt"), "NX and XX, GT or LT options at the same time are not compatible"),
    (("10", "nx", "xx"), "NX and XX, GT or LT options at the same time are not compatible"),
    (("10", "lt", "nx"), "NX and XX, GT or LT options at the same time are not compatible"),
    (("10", "gt", "lt"), "GT and LT options at the same time are not compatible"),
    (("10", "foo"), "Unsupported option foo"),
    (("10", "NX", "bar"), "Unsupported option bar"),
    (("abc",), "value is not an integer or out of range"),
    (("1.5",), "value is not an integer or out of range"),
    (("9223372036854775807",), "invalid expire time in 'expire' command"),
    (("-9223372036854775808",), "invalid expire time in 'expire' command"),
    # Redis's tests/unit/expire.tcl: overflow by the unit or by adding now
    (("9223370399119966",), "invalid expire time in 'expire' command"),
    (("9223372036854776",), "invalid expire time in 'expire' command"),
    (("10000000000000000",), "invalid expire time in 'expire' command"),
    (("18446744073709561",), "invalid expire time in 'expire' command"),
    (("-9223372036854776",), "invalid expire time in 'expire' command"),
    (("-9999999999999999",), "invalid expire time in 'expire' command"),
])
def test_expire_errors(target, args, message):
    r = raw(target)
    r.execute_command("SET", "s", "v")
    assert err(r, "EXPIRE", "s", *args) == message
    assert r.execute_command("TTL", "s") == -1


def test_expire_overflow_names_the_command(target):
    r = raw(target)
    r.execute_command("SET", "s", "v")
    assert err(r, "PEXPIRE", "s", "9223372036854775807") == \
        "invalid expire time in 'pexpire' command"
    assert err(r, "EXPIREAT", "s", "9223372036854776") == \
        "invalid expire time in 'expireat' command"
    assert err(r, "PEXPIRE", "s", "9223372036854770000") == \
        "invalid expire time in 'pexpire' command"
    assert err(r, "GETEX", "s", "EX", "-9999999999999999") == \
        "invalid expire time in 'getex' command"
    assert err(r, "EXPIRE", "s") == "wrong number of arguments for 'expire' command"
    assert r.execute_command("TTL", "s") == -1
    assert r.execute_command("EXPIRE", "s", "-9223372036854775") == 1    # in range: deleted
    assert r.execute_command("EXISTS", "s") == 0


def test_expire_ttl_pttl(target):
    r = raw(target)
    assert r.execute_command("EXPIRE", "missing", "10") == 0
    assert r.execute_command("TTL", "missing") == -2
    assert r.execute_command("PTTL", "missing") == -2
    r.execute_command("SET", "s", "v")
    assert r.execute_command("TTL", "s") == -1
    assert r.execute_command("PTTL", "s") == -1
    assert r.execute_command("EXPIRE", "s", "100") == 1
    assert r.execute_command("TTL", "s") == 100
    assert 99000 <= r.execute_command("PTTL", "s") <= 100000
    assert r.execute_command("PEXPIRE", "s", "1500") == 1
    assert 1400 <= r.execute_command("PTTL", "s") <= 1500
    assert r.execute_command("TTL", "s") in (1, 2)       # rounded: (ms + 500) / 1000
    assert r.execute_command("PEXPIRE", "s", "150") == 1
    time.sleep(0.4)
    assert r.execute_command("GET", "s") is None
    assert r.execute_command("TTL", "s") == -2


def test_expire_at_now_or_before_deletes(target):
    r = raw(target)
    for args in (("EXPIRE", "s", "0"), ("EXPIRE", "s", "-1"), ("PEXPIRE", "s", "-100"),
                 ("EXPIREAT", "s", "1"), ("PEXPIREAT", "s", "0"),
                 ("EXPIREAT", "s", "-9223372036854775")):
        r.execute_command("SET", "s", "v")
        assert r.execute_command(*args) == 1
        assert r.execute_command("EXISTS", "s") == 0
        assert r.execute_command(*args) == 0


def test_expire_options(target):
    r = raw(target)
    r.execute_command("SET", "s", "v")
    assert r.execute_command("EXPIRE", "s", "100", "XX") == 0    # no TTL yet
    assert r.execute_command("EXPIRE", "s", "100", "GT") == 0    # none counts as infinite
    assert r.execute_command("TTL", "s") == -1
    assert r.execute_command("EXPIRE", "s", "100", "LT") == 1
    assert r.execute_command("TTL", "s") == 100
    assert r.execute_command("EXPIRE", "s", "50", "NX") == 0
    assert r.execute_command("EXPIRE", "s", "200", "gt") == 1
    assert r.execute_command("TTL", "s") == 200
    assert r.execute_command("EXPIRE", "s", "50", "GT") == 0
    assert r.execute_command("EXPIRE", "s", "300", "LT") == 0
    assert r.execute_command("EXPIRE", "s", "50", "lt") == 1
    assert r.execute_command("TTL", "s") == 50
    assert r.execute_command("EXPIRE", "s", "60", "XX", "GT") == 1
    assert r.execute_command("TTL", "s") == 60
    assert r.execute_command("PEXPIREAT", "s", "1", "GT") == 0
    assert r.execute_command("PEXPIREAT", "s", "1", "LT") == 1   # past: deleted
    assert r.execute_command("EXISTS", "s") == 0
    r.execute_command("SET", "t", "v")
    assert r.execute_command("EXPIRE", "t", "70", "NX") == 1
    assert r.execute_command("TTL", "t") == 70
    for opt in ("NX", "XX", "GT", "LT"):
        assert r.execute_command("EXPIRE", "missing", "70", opt) == 0
    r.execute_command("SET", "u", "v")
    assert r.execute_command("EXPIRE", "u", "-10", "LT") == 1    # no TTL counts as infinite
    assert r.execute_command("TTL", "u") == -2


def test_expireat_and_expiretime(target):
    r = raw(target)
    assert r.execute_command("EXPIRETIME", "missing") == -2
    assert r.execute_command("PEXPIRETIME", "missing") == -2
    r.execute_command("SET", "s", "v")
    assert r.execute_command("EXPIRETIME", "s") == -1
    assert r.execute_command("PEXPIRETIME", "s") == -1
    assert r.execute_command("EXPIREAT", "s", "4000000000") == 1
    assert r.execute_command("EXPIRETIME", "s") == 4000000000
    assert r.execute_command("PEXPIRETIME", "s") == 4000000000000
    assert r.execute_command("PEXPIREAT", "s", "4000000000123") == 1
    assert r.execute_command("PEXPIRETIME", "s") == 4000000000123
    assert r.execute_command("EXPIRETIME", "s") == 4000000000
    assert r.execute_command("PEXPIREAT", "s", "4000000000500") == 1
    assert r.execute_command("EXPIRETIME", "s") == 4000000001    # (ms + 500) / 1000
    at = int(time.time()) + 1000
    assert r.execute_command("EXPIREAT", "s", at) == 1
    assert r.execute_command("TTL", "s") in (999, 1000)


def test_persist(target):
    r = raw(target)
    assert r.execute_command("PERSIST", "missing") == 0
    r.execute_command("SET", "s", "v")
    assert r.execute_command("PERSIST", "s") == 0
    r.execute_command("EXPIRE", "s", "100")
    assert r.execute_command("PERSIST", "s") == 1
    assert r.execute_command("TTL", "s") == -1
    assert r.execute_command("GET", "s") == b"v"
    assert r.execute_command("PERSIST", "s") == 0


@pytest.mark.parametrize("command, keeps", [
    (("INCR", "k"), True), (("DECRBY", "k", "2"), True), (("INCRBYFLOAT", "k", "1.5"), True),
    (("APPEND", "k", "0"), True), (("SET", "k", "1", "KEEPTTL"), True),
    (("GETEX", "k"), True), (("GET", "k"), True), (("RENAME", "k", "k2"), True),
    (("SET", "k", "1"), False), (("GETSET", "k", "1"), False), (("MSET", "k", "1"), False),
    (("SET", "k", "1", "XX"), False), (("GETEX", "k", "PERSIST"), False),
])
def test_which_commands_keep_the_ttl(target, command, keeps):
    r = raw(target)
    r.execute_command("SET", "k", "10", "EX", "100")
    r.execute_command(*command)
    key = "k2" if command[0] == "RENAME" else "k"
    assert r.execute_command("TTL", key) == (100 if keeps else -1)


def test_expiry_through_redis_py(target):
    r = target.r
    r.set("a", "1")
    assert r.expire("a", 100) is True
    assert r.ttl("a") == 100
    assert r.expire("a", 50, gt=True) is False
    assert r.pexpire("a", 200000, gt=True) is True
    assert 199 <= r.ttl("a") <= 200
    assert r.persist("a") is True
    assert r.expire("nope", 10) is False
    assert r.expireat("a", 4000000000) is True
    assert r.expiretime("a") == 4000000000
