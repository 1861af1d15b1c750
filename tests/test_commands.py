"""The atomic commands (issue 13) beyond tests/conformance/test_atomic.py:

* recovery: the commands' WAL records, replayed after a SIGKILL, give back the
  values *and the TTLs* the commands left (incr's TTL on creation, keepttl,
  getex's new expiry and PERSIST, getdel's delete), with the entries in the
  buffers or read from segments;
* a differential trace against a real redis-server (Debian package, on a unix
  socket) through redis-py: put with nx / xx / keepttl / get = SET, getdel =
  GETDEL, getex = GETEX EX / PERSIST, incr = INCRBY, and incr with a TTL on
  creation = the Lua script below (redis.io/commands/set, /getdel, /getex,
  /incr, /eval); same results, same values, same TTL class (-2, -1, > 0).
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

import fusedb

LONG = 1000.0

#: The child: runs the commands with durability="sync" (each acknowledged write
#: is in the WAL file), says "D" and waits to be killed.
CHILD = r"""
import os, sys, time, fusedb
path, flush = sys.argv[1], sys.argv[2] == "flush"
db = fusedb.open(path, durability="sync")
db.put(b"keep", b"v1", ttl=1000)
db.put(b"persist", b"p", ttl=1000)
db.put(b"gone", b"g")
db.put(b"live", b"l")
db.incr(b"plain", 1)
db.incr(b"window", 1, ttl=1000)
db.incr(b"dead", 1)
db.delete(b"dead")
if flush:
    db.flush()
assert db.put(b"keep", b"v2", keepttl=True, get=True) == b"v1"
assert db.getex(b"persist", None) == b"p"
assert db.getex(b"plain", 1000) == b"1"
assert db.getdel(b"gone") == b"g"
assert db.incr(b"window", 1, ttl=5) == 2
assert db.incr(b"dead", 3, ttl=1000) == 3
assert db.incr(b"fresh", 1, ttl=1000) == 1
assert db.add(b"live", b"no") is False
assert db.put(b"live", b"no", nx=True) is False
assert db.add(b"added", b"a", ttl=1000) is True
assert db.update(b"live", lambda v: v) == b"l"
sys.stdout.write("D")
sys.stdout.flush()
time.sleep(60)
"""


@pytest.mark.parametrize("flush", ["buffers", "flush"])
def test_commands_survive_a_sigkill_with_their_ttls(tmp_path, flush):
    path = str(tmp_path / "db")
    p = subprocess.Popen([sys.executable, "-c", CHILD, path, flush], stdout=subprocess.PIPE)
    try:
        assert p.stdout.read(1) == b"D", "the child did not finish its commands"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
    with fusedb.open(path) as db:
        want = {b"keep": b"v2", b"persist": b"p", b"live": b"l", b"plain": b"1",
                b"window": b"2", b"dead": b"3", b"fresh": b"1", b"added": b"a"}
        assert dict(db.scan()) == want
        for k in (b"keep", b"plain", b"window", b"dead", b"fresh", b"added"):
            assert LONG - 120 < db.ttl(k) <= LONG, k
        for k in (b"persist", b"live"):
            assert db.ttl(k) == fusedb.TTL_NONE, k
        assert db.ttl(b"gone") == fusedb.TTL_MISSING
        assert db.incr(b"window", 1) == 3       # still a counter after replay


#: incr with a TTL on creation in Redis: INCRBY, and EXPIRE if the key was
#: missing; with xx, nil for a missing key. The new value is returned as GET reads it:
#: a Lua number is a double and would round a 64-bit counter.
INCR_TTL = """
local existed = redis.call('EXISTS', KEYS[1])
if ARGV[3] == '1' and existed == 0 then return false end
redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and ARGV[2] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return redis.call('GET', KEYS[1])
"""


@pytest.fixture
def redis_client(tmp_path):
    """A redis-server of our own on a unix socket (no TCP port), stopped by its
    pid (SIGTERM, then SIGKILL) whatever the test does."""
    redis = pytest.importorskip("redis")
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    sock = str(tmp_path / "redis.sock")
    p = subprocess.Popen([server, "--port", "0", "--unixsocket", sock, "--save", "",
                          "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        r = redis.Redis(unix_socket_path=sock)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield r
        r.close()
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def outcome(f):
    """("ok", f()) or ("err", None) for an error of either side."""
    import redis
    try:
        return "ok", f()
    except (redis.ResponseError, fusedb.FuseDBError):
        return "err", None


def one_op(db, r, incr_ttl, rnd: random.Random, k: bytes) -> tuple:
    """A random command on ``k`` against both: (the op, FuseDB's outcome, Redis's)."""
    v = rnd.choice([b"1", b"-7", b"x", b"", b"01", b"9223372036854775807"])
    x = rnd.random()
    ttl = rnd.choice([None, None, 100, 200])
    if x < 0.35:
        nx, xx, keepttl, get = (rnd.random() < 0.3 for _ in range(4))
        xx = xx and not nx
        ttl = None if keepttl else ttl

        def via_redis():
            res = r.set(k, v, ex=ttl, nx=nx, xx=xx, keepttl=keepttl, get=get)
            return res if get else bool(res) if nx or xx else None
        return (("put", k, v, ttl, nx, xx, keepttl, get),
                outcome(lambda: db.put(k, v, ttl, nx=nx, xx=xx, keepttl=keepttl, get=get)),
                outcome(via_redis))
    if x < 0.65:
        d, xx = rnd.choice([1, -1, 5, 2 ** 62]), rnd.random() < 0.2
        ttl = None if xx else ttl       # FuseDB refuses both (the ttl could never apply)

        def via_script():
            res = incr_ttl(keys=[k], args=[d, ttl or "", int(xx)])
            return None if res is None else int(res)
        return (("incr", k, d, ttl, xx), outcome(lambda: db.incr(k, d, ttl, xx=xx)),
                outcome(via_script))
    if x < 0.75:
        return ("getdel", k), outcome(lambda: db.getdel(k)), outcome(lambda: r.getdel(k))
    if x < 0.85:
        return (("getex", k, ttl), outcome(lambda: db.getex(k, ttl)),
                outcome(lambda: r.getex(k, ex=ttl) if ttl else r.getex(k, persist=True)))
    if x < 0.92:
        return (("add", k, v, ttl), outcome(lambda: db.add(k, v, ttl)),
                outcome(lambda: bool(r.set(k, v, ex=ttl, nx=True))))
    return ("delete", k), outcome(lambda: db.delete(k)), outcome(lambda: bool(r.delete(k)))


def ttl_class(t: float):
    return t if t < 0 else "live"


@pytest.mark.parametrize("seed", [1, 2])
def test_same_results_as_redis(tmp_path, redis_client, seed):
    r = redis_client
    incr_ttl = r.register_script(INCR_TTL)
    rnd = random.Random(seed)
    keys = [b"k%d" % i for i in range(6)]
    with fusedb.open(str(tmp_path / "db")) as db:
        for i in range(1500):
            k = rnd.choice(keys)
            op, a, b = one_op(db, r, incr_ttl, rnd, k)
            assert a == b, (i, op)
            assert db.get(k) == r.get(k), (i, op)
            assert ttl_class(db.ttl(k)) == ttl_class(r.ttl(k)), (i, op)


#: Keys on both shards of a 2-shard database (shard 0 owns keys below 0x80).
RACE_KEYS = [b"\x10a%d" % i for i in range(100)] + [b"\x90a%d" % i for i in range(100)]
TOKENS = [b"\x20t%d" % i for i in range(100)] + [b"\xa0t%d" % i for i in range(100)]


def race(db, who: int) -> tuple[list[bytes], int]:
    """In a child process: add every race key, getdel every token and count
    hits on a window counter. Returns (keys this process added, tokens it got)."""
    won, got = [], 0
    for k, t in zip(RACE_KEYS, TOKENS):
        if db.add(k, b"%d" % who, ttl=LONG):
            won.append(k)
        if db.getdel(t) is not None:
            got += 1
        db.incr(b"\x90window", 1, ttl=LONG)
    return won, got


def test_add_getdel_and_incr_ttl_race_across_processes(tmp_path):
    """Four processes race on the same keys (router + workers, handles pickled):
    each key is added by exactly one, each token taken by exactly one, and the
    counter created with its TTL once counts every hit."""
    import multiprocessing
    spawn = multiprocessing.get_context("spawn")
    with fusedb.open(str(tmp_path / "db"), shards=2) as db:
        for t in TOKENS:
            db.put(t, b"token")
        n = 4
        with spawn.Pool(n) as pool:
            results = pool.starmap(race, [(db, who) for who in range(n)])
        winners = [k for won, _ in results for k in won]
        assert sorted(winners) == sorted(RACE_KEYS)
        for who, (won, _) in enumerate(results):
            assert all(db.get(k) == b"%d" % who for k in won)
        assert sum(got for _, got in results) == len(TOKENS)
        assert not any(t in db for t in TOKENS)
        assert db.get(b"\x90window") == b"%d" % (n * len(RACE_KEYS))
        assert LONG - 120 < db.ttl(b"\x90window") <= LONG


ACCOUNTS = [b"\x10acct", b"\xe0acct"]     # far apart: two leaves, two shards


def transfer(db, who: int, rounds: int) -> int:
    """In a child process: move 1 between the accounts ``rounds`` times with
    ``transact`` (read both, write both), and check in each round that the two
    balances seen together still sum to 0. Returns the rounds whose sum held."""
    held = 0
    a, b = ACCOUNTS if who % 2 else ACCOUNTS[::-1]

    def move(tx):
        x, y = int(tx.get(a) or 0), int(tx.get(b) or 0)
        tx.put(a, b"%d" % (x - 1))
        tx.put(b, b"%d" % (y + 1))
        return x + y
    for _ in range(rounds):
        held += db.transact(move, [a]) == 0      # b undeclared: the rerun locks all
    return held


def test_transact_is_isolated_across_processes(tmp_path):
    """Four processes transfer between two keys in two shards with db.transact:
    no process ever sees a half-applied transfer, and none is lost."""
    import multiprocessing
    spawn = multiprocessing.get_context("spawn")
    with fusedb.open(str(tmp_path / "db"), shards=2) as db:
        n, rounds = 4, 300
        with spawn.Pool(n) as pool:
            held = pool.starmap(transfer, [(db, who, rounds) for who in range(n)])
        assert held == [rounds] * n
        a, b = (int(db.get(k)) for k in ACCOUNTS)
        assert a + b == 0 and a == 0    # two processes each way: the moves cancel out
