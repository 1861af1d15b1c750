"""EVAL, EVALSHA, SCRIPT against real redis-server 7.0.15 and a FuseDB daemon
(the ``target`` fixture: {redis, fusedb} x RESP {2, 3}; tests/resp/conftest.py).

Every expected reply below is asserted on both servers, so it is Redis's own
(the error texts, the Lua <-> RESP conversions, the sandbox). FuseDB-only
tests at the end cover what Redis has no counterpart for (the script store
shared by the server processes, the undeclared-key rerun, the time limit
that applies nothing, running without lupa) and documented deviations.
"""

from __future__ import annotations

import hashlib
import time
import threading
from pathlib import Path

import pytest
import redis

from tests.resp.conftest import start_fusedb

LIMITS_SCRIPTS = Path(__import__("limits").__file__).parent / "resources/redis/lua_scripts"


def sha(body: str) -> str:
    return hashlib.sha1(body.encode()).hexdigest()


def error_of(fn, *args) -> str:
    """The error text redis-py raised for ``fn(*args)`` (redis-py drops a
    leading ``ERR `` and keeps any other code)."""
    with pytest.raises(redis.ResponseError) as exc:
        fn(*args)
    return str(exc.value)


@pytest.fixture
def r(target):
    target.r.flushall()
    return target.r


CONVERSIONS = [
    ("return 1", 1),
    ("return 3.7", 3),
    ("return -3.7", -3),
    ("return 'x'", b"x"),
    ("return true", 1),
    ("return false", None),
    ("return nil", None),
    ("return {1, 2, {3, 'x'}, nil, 4}", [1, 2, [3, b"x"]]),
    ("return {ok = 'FINE'}", b"FINE"),
    ("return redis.status_reply('FINE')", b"FINE"),
    ("return {}", []),
    ("return {1, false, 2}", [1, None, 2]),
    ("return redis.call('ping')", b"PONG"),
    ("return redis.call('get', 'nosuchkey')", None),
    ("return tostring(redis.call('get', 'nosuchkey'))", b"false"),
    ("return type(redis.call('set', 'k', 'v'))", b"table"),
    ("return redis.call('set', 'k', 'v').ok", b"OK"),
    ("redis.call('set', 'f', 0.1) return redis.call('get', 'f')", b"0.10000000000000001"),
    ("redis.call('set', 'f', 1.5e20) return redis.call('get', 'f')", b"1.5e+20"),
    ("redis.call('set', 'n', 10) return redis.call('incrby', 'n', 5)", 15),
    ("redis.call('mset', 'a', 1, 'b', 2) return redis.call('mget', 'a', 'x', 'b')",
     [b"1", None, b"2"]),
    ("return redis.sha1hex('')", b"da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    ("return pcall(redis.call, 'nosuch')", None),
    ("local ok, e = pcall(redis.call, 'nosuch') return e",
     b"ERR Unknown Redis command called from script"),
    ("return type(redis.pcall('nosuch'))", b"table"),
    ("return redis.pcall('nosuch').err", b"ERR Unknown Redis command called from script"),
    ("local t = {} t.x = 1 return t.x", 1),
    ("return string.rep('x', 3) .. math.floor(2.5) .. table.concat({'a', 'b'})", b"xxx2ab"),
    ("return #KEYS + #ARGV", 0),
    ("#!lua\nreturn 1", 1),
]


@pytest.mark.parametrize("body, expected", CONVERSIONS)
def test_conversions(r, body, expected):
    assert r.eval(body, 0) == expected


def test_keys_and_argv(r):
    assert r.eval("return {KEYS[1], KEYS[2], ARGV[1], #ARGV}", 2, "k1", "k2", "a", "b") == \
        [b"k1", b"k2", b"a", 2]


ERRORS = [
    ("return x", "user_script:1: Script attempted to access nonexistent global variable 'x'"),
    ("return _G.x", "user_script:1: Script attempted to access nonexistent global variable 'x'"),
    ("x = 1", "user_script:1: Attempt to modify a readonly table"),
    ("function f() end", "user_script:1: Attempt to modify a readonly table"),
    ("return redis.call('incr', 's')", "value is not an integer or out of range"),
    ("return redis.call('nosuch')", "Unknown Redis command called from script"),
    ("return redis.call('get')", "Wrong number of args calling Redis command from script"),
    ("return redis.call()", "Please specify at least one argument for this redis lib call"),
    ("return redis.call('get', {})",
     "Lua redis lib command arguments must be strings or integers"),
    ("return redis.call('get', true)",
     "Lua redis lib command arguments must be strings or integers"),
    ("return redis.call('multi')", "This Redis command is not allowed from script"),
    ("return redis.call('eval', 'return 1', 0)", "This Redis command is not allowed from script"),
    ("error('boom')", "user_script:1: boom"),
    ("error({err = 'MY thing'})", "MY thing"),
    ("\n\nredis.call('incr', 's')", "value is not an integer or out of range"),
    ("return loadfile", "user_script:1: Script attempted to access nonexistent global "
                        "variable 'loadfile'"),
    ("return os", "user_script:1: Script attempted to access nonexistent global variable 'os'"),
    ("return io", "user_script:1: Script attempted to access nonexistent global variable 'io'"),
]


@pytest.mark.parametrize("body, message", ERRORS)
def test_errors_name_the_script_and_line(r, body, message):
    r.set("s", "abc")
    line = body.count("\n", 0, body.find("redis.call") if "redis.call" in body else 0) + 1
    assert error_of(r.eval, body, 0) == f"{message} script: {sha(body)}, on @user_script:{line}."


def test_error_replies_returned_by_the_script(r):
    assert error_of(r.eval, "return redis.error_reply('My Error')", 0) == "My Error"
    assert error_of(r.eval, "return redis.error_reply('x')", 0) == "x"      # "ERR x"
    assert error_of(r.eval, "return {err = 'CODE text'}", 0) == "CODE text"
    r.set("s", "abc")
    assert error_of(r.eval, "return redis.pcall('incr', 's')", 0) == \
        "value is not an integer or out of range"


def test_compile_errors_and_shebang(r):
    assert error_of(r.eval, "return 1 +", 0) == \
        "Error compiling script (new function): user_script:1: unexpected symbol near '<eof>'"
    assert error_of(r.eval, "#!python\nreturn 1", 0) == \
        "Unexpected engine in script shebang: #!python"
    body = "#!lua flags=no-writes\nreturn redis.call('set', 'a', 'b')"
    assert error_of(r.eval, body, 0) == ("Write commands are not allowed from read-only "
                                         f"scripts. script: {sha(body)}, on @user_script:2.")
    body = "return redis.call('set', 'a', 'b')"
    assert error_of(r.eval_ro, body, 0) == ("Write commands are not allowed from read-only "
                                            f"scripts. script: {sha(body)}, on @user_script:1.")
    r.set("a", "1")
    assert r.eval_ro("return redis.call('get', KEYS[1])", 1, "a") == b"1"


def test_numkeys(r):
    ex = r.execute_command
    assert error_of(ex, "EVAL", "return 1", "x") == "value is not an integer or out of range"
    assert error_of(ex, "EVAL", "return 1", " 1", "a") == "value is not an integer or out of range"
    assert error_of(ex, "EVAL", "return 1", 2, "a") == \
        "Number of keys can't be greater than number of args"
    assert error_of(ex, "EVAL", "return 1", -1) == "Number of keys can't be negative"
    assert error_of(ex, "EVAL") == "wrong number of arguments for 'eval' command"


def test_a_failing_command_keeps_the_writes_before_it(r):
    """Redis never rolls a script back: the SET stays, the reply is the error."""
    r.set("s", "abc")
    body = "redis.call('set', KEYS[1], 'y') return redis.call('incr', KEYS[2])"
    assert error_of(r.eval, body, 2, "partial", "s").startswith("value is not an integer")
    assert r.get("partial") == b"y"


def test_undeclared_keys_are_reachable(r):
    """Redis (no cluster) lets a script touch keys it did not declare; so does
    FuseDB (the transaction reruns with every shard locked)."""
    keys = [bytes([1 + 50 * i]) + b"k" for i in range(6)]
    body = "local n = 0 for i = 1, #ARGV do n = n + redis.call('incr', ARGV[i]) end return n"
    assert r.eval(body, 1, keys[0], *keys) == 6
    assert r.eval(body, 0, *keys) == 12
    assert r.mget(keys) == [b"2"] * 6


def test_script_load_exists_flush(r):
    body = "return 'loaded'"
    assert r.script_load(body) == sha(body)
    assert r.evalsha(sha(body), 0) == b"loaded"
    assert r.evalsha(sha(body).upper(), 0) == b"loaded"
    assert r.script_exists(sha(body), "0" * 40) == [True, False]
    assert r.keys("*") == [] and r.dbsize() == 0        # the script store is no key
    r.flushall()
    assert r.script_exists(sha(body)) == [True]          # FLUSHALL keeps scripts
    assert r.script_flush() is True
    assert r.script_exists(sha(body)) == [False]
    with pytest.raises(redis.exceptions.NoScriptError):
        r.evalsha(sha(body), 0)
    body2 = "return 'by eval'"
    assert r.eval(body2, 0) == b"by eval"
    assert r.script_exists(sha(body2)) == [True]          # EVAL caches the script too
    assert r.evalsha(sha(body2), 0) == b"by eval"


def test_script_errors(r):
    ex = r.execute_command
    with pytest.raises(redis.exceptions.NoScriptError):
        ex("EVALSHA", "abc", 0)
    assert error_of(ex, "SCRIPT", "LOAD") == "wrong number of arguments for 'script|load' command"
    assert error_of(ex, "SCRIPT", "EXISTS") == \
        "wrong number of arguments for 'script|exists' command"
    assert error_of(ex, "SCRIPT", "FOO") == "unknown subcommand 'FOO'. Try SCRIPT HELP."
    assert error_of(ex, "SCRIPT", "FLUSH", "x") == "SCRIPT FLUSH only support SYNC|ASYNC option"
    assert ex("SCRIPT", "FLUSH", "ASYNC") in (True, b"OK")
    assert error_of(ex, "SCRIPT", "KILL") == "NOTBUSY No scripts in execution right now."
    assert error_of(ex, "SCRIPT", "LOAD", "return +") == \
        "Error compiling script (new function): user_script:1: unexpected symbol near '+'"


def test_redis_py_script_object_reloads_after_flush(r):
    """redis-py's Script: EVALSHA, on NOSCRIPT a SCRIPT LOAD and EVALSHA again."""
    script = r.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
    assert script(keys=["c"], args=[5]) == 5
    r.script_flush()
    assert script(keys=["c"], args=[2]) == 7


def test_scripts_are_atomic_under_concurrency(target):
    """A read-modify-write in Lua from 4 connections (on FuseDB: spread over
    its 2 server processes) loses no update."""
    target.r.flushall()
    body = "local v = tonumber(redis.call('get', KEYS[1]) or '0') " \
           "redis.call('set', KEYS[1], v + 1) return v + 1"
    n, threads = 200, 4

    def work():
        c = target.client()
        s = c.register_script(body)
        for _ in range(n):
            s(keys=["rmw"])
    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts)
    assert target.r.get("rmw") == b"%d" % (n * threads)


# -- the limits library's scripts (limits/resources/redis/lua_scripts) ------------------

def limits_script(r, name: str):
    return r.register_script((LIMITS_SCRIPTS / f"{name}.lua").read_text())


def test_limits_incr_expire(r):
    incr_expire = limits_script(r, "incr_expire")
    assert incr_expire(keys=["lim"], args=[10, 1]) == 1
    assert 9000 < r.pttl("lim") <= 10000
    r.expire("lim", 100)
    assert incr_expire(keys=["lim"], args=[10, 2]) == 3
    assert r.ttl("lim") > 10                          # not reset: only the first hit sets it


def test_limits_sliding_window(r):
    acquire = limits_script(r, "acquire_sliding_window")
    window = limits_script(r, "sliding_window")
    prev, cur = "{lim}/-1", "{lim}"
    assert window(keys=[prev, cur], args=[10]) == [None, -2, None, -2]
    assert acquire(keys=[prev, cur], args=[3, 10, 1]) == 1
    assert acquire(keys=[prev, cur], args=[3, 10, 2]) == 1
    assert acquire(keys=[prev, cur], args=[3, 10, 1]) is None     # over the limit
    assert acquire(keys=[prev, cur], args=[3, 10, 5]) is None     # more than the limit
    got = window(keys=[prev, cur], args=[10])
    assert got[:3] == [None, -2, b"3"] and 19000 < got[3] <= 20000
    # The current window reached its second half: shifted to the previous one.
    r.pexpire(cur, 5000)
    got = window(keys=[prev, cur], args=[10])
    assert got[0] == b"3" and 4000 < got[1] <= 5000 and got[2] == b"0" and got[3] > 14000
    assert acquire(keys=[prev, cur], args=[3, 10, 1]) == 1         # 3 * ~0.5 + 0 + 1 <= 3


def test_limits_clear_keys(r):
    clear = limits_script(r, "clear_keys")
    r.mset({"LIMITS:a": 1, "LIMITS:b": 2, "other": 3})
    assert clear(keys=["LIMITS:*"]) == 2
    assert r.keys("*") == [b"other"]


# -- FuseDB only --------------------------------------------------------------------------

@pytest.fixture
def fusedb(fusedb_server):
    c = fusedb_server.client(protocol=2)
    c.flushall()
    return c


def server_index(client) -> int:
    """Which of the 2 server processes serves this connection (client ids are
    index + K * n)."""
    return client.client_id() % 2


def test_script_store_is_shared_by_the_server_processes(fusedb_server):
    """SCRIPT LOAD answered by one server process, EVALSHA by the other."""
    by_process = {}
    for _ in range(40):                      # the shared accept queue spreads them
        c = fusedb_server.client(protocol=2, single_connection_client=True)
        by_process.setdefault(server_index(c), c)
        if len(by_process) == 2:
            break
    assert len(by_process) == 2, "all connections went to one server process"
    a, b = by_process[0], by_process[1]
    body = "return 'shared ' .. ARGV[1]"
    a.script_flush()
    assert b.script_load(body) == sha(body)
    assert a.evalsha(sha(body), 0, "x") == b"shared x"
    assert a.script_exists(sha(body)) == [True]
    b.script_flush()                          # seen by the other process at once
    with pytest.raises(redis.exceptions.NoScriptError):
        a.evalsha(sha(body), 0, "x")


def test_moving_window_script_needs_lists(fusedb):
    """limits' moving window uses lists (LPUSH, LINDEX, LTRIM): out of scope,
    documented; the script fails with Redis's text for an unknown command."""
    acquire = limits_script(fusedb, "acquire_moving_window")
    with pytest.raises(redis.ResponseError, match="Unknown Redis command called from script"):
        acquire(keys=["mw"], args=[0, 5, 10, 1])


def test_without_lupa_eval_says_what_to_install(tmp_path):
    """A server process where ``import lupa`` fails (a stand-in package first
    on PYTHONPATH) answers EVAL with the extra to install; the rest works."""
    shim = tmp_path / "shim" / "lupa"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('lupa hidden by the test')\n")
    from tests.resp.conftest import fusedb_env
    env = fusedb_env(PYTHONPATH=str(shim.parent))
    with start_fusedb(tmp_path / "srv", servers=1, env=env) as server:
        c = server.client(protocol=2)
        with pytest.raises(redis.ResponseError) as exc:
            c.eval("return 1", 0)
        assert str(exc.value) == "scripting needs lupa: pip install 'fusedb[server]'"
        with pytest.raises(redis.ResponseError, match="scripting needs lupa"):
            c.script_load("return 1")
        assert c.set("k", "v") is True and c.get("k") == b"v"


# -- in one process, on a real database: what the wire cannot set or show ----------------

@pytest.fixture
def ctx(tmp_path):
    """A connection context of a server process over a 3-shard database
    (``fusedb.open(path, shards=3)``: a router and three worker processes)."""
    import fusedb
    from fusedb.resp.state import Context, Server
    db = fusedb.open(str(tmp_path / "db"), shards=3)
    try:
        yield Context(Server(db, config={"lua-time-limit": "300"}))
    finally:
        db.close()


def run(ctx, *argv):
    from fusedb.resp.commands import dispatch
    return dispatch(ctx, [a if isinstance(a, bytes) else str(a).encode() for a in argv])


def test_time_limit_applies_nothing(ctx):
    """A script over ``lua-time-limit`` (300 ms here) is stopped, and its
    writes before the stop are not applied (unlike Redis, which lets it run
    and answers BUSY to the others); a pcall in the script cannot catch it."""
    from fusedb.resp.lua import KILLED
    for body in ("redis.call('set', KEYS[1], 'x') while true do end",
                 "redis.call('set', KEYS[1], 'x') while true do pcall(function() end) end"):
        t = time.monotonic()
        assert run(ctx, "EVAL", body, 1, "killme") == KILLED
        assert 0.3 <= time.monotonic() - t < 5
        assert ctx.db.get(b"killme") is None
    assert run(ctx, "EVAL", "return redis.call('set', KEYS[1], 'y')", 1, "killme") == b"OK"
    assert ctx.db.get(b"killme") == b"y"


def test_an_undeclared_key_in_another_shard_reruns_the_script(ctx):
    """Keys in three shards, one declared: the transaction raises Retry from
    inside redis.call (through the script's own pcall too); the bridge lets it
    out of Lua and the script reruns with every shard locked, once."""
    from fusedb.resp import lua
    from fusedb.testing import internals
    keys = [bytes([1 + 50 * i]) + b"k" for i in range(6)]
    assert len({internals.shard_of_leaf(ctx.db, internals.leaf_of(ctx.db, k))
                for k in keys}) > 1
    runs = []
    real = lua.Scripts.run

    def counting(self, *a, **kw):
        runs.append(1)
        return real(self, *a, **kw)
    body = ("redis.call('incr', 'runs') local n = 0 for i = 1, #ARGV do "
            "local ok, v = pcall(redis.call, 'incr', ARGV[i]) n = n + v end return n")
    lua.Scripts.run = counting
    try:
        assert run(ctx, "EVAL", body, 1, keys[0], *keys) == 6
    finally:
        lua.Scripts.run = real
    assert runs == [1]
    assert ctx.db.get(b"runs") == b"1"            # the dropped attempt wrote nothing
    assert [ctx.db.get(k) for k in keys] == [b"1"] * 6


def test_lua_memory_is_bounded(ctx):
    """A script allocating without end fails with Lua's out-of-memory error
    (lupa's max_memory, 256 MiB) instead of growing the server process; the
    next script runs."""
    ctx.server.config["lua-time-limit"] = "60000"    # the memory runs out first
    body = "local t = {} for i = 1, 1e9 do t[i] = i end"
    assert run(ctx, "EVAL", body, 0) == \
        b"ERR Error running script %s, not enough memory" % sha(body).encode()
    assert run(ctx, "EVAL", "return redis.call('incr', KEYS[1])", 1, "after") == 1


def test_a_stored_script_is_trusted_by_its_sha_only(fusedb_server):
    """FuseDB only: the shared script store is keys a client can also SET. A
    body stored under another body's SHA1 is never run: EVALSHA answers
    NOSCRIPT, and SCRIPT LOAD of the genuine body replaces it."""
    r = fusedb_server.client()
    body = b"return 'genuine'"
    sha = hashlib.sha1(body).hexdigest()
    r.set(b"\xff\xffresp:script:" + sha.encode(), b"return 'poisoned'")
    with pytest.raises(redis.exceptions.NoScriptError):
        r.evalsha(sha, 0)
    assert r.script_load(body) == sha
    assert r.evalsha(sha, 0) == b"genuine"
    other = fusedb_server.client()          # possibly another server process
    assert other.evalsha(sha, 0) == b"genuine"


def test_bytecode_is_never_loaded(target):
    """Lua 5.1 does not verify bytecode (CVE-2015-4335): loadstring of a binary
    chunk gives nil, as in Redis, so calling it fails the same way."""
    r = target.r
    with pytest.raises(redis.exceptions.ResponseError) as e:
        r.eval("return loadstring(string.dump(function() return 7 end))()", 0)
    assert "attempt to call a nil value" in str(e.value)
    assert r.eval("return loadstring('return 7')()", 0) == 7


def test_a_binary_script_body_is_refused(fusedb_server):
    """FuseDB only: EVAL of a precompiled chunk is a compile error."""
    r = fusedb_server.client()
    with pytest.raises(redis.exceptions.ResponseError) as e:
        r.eval(b"\x1bLuaQ\x00\x01\x04\x08\x04\x08\x00", 0)
    assert "binary chunks are not allowed" in str(e.value)
    assert r.ping()
