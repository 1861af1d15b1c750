"""What FuseDBCache adds to Django's contract (test_cache_contract.py): increments
exact across processes, get_or_set races settled by the atomic add, the stored
format (ints as decimal, the rest pickled), the limits (int64, key and value
sizes), clear() by namespace, one attach per process, a daemon restart."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import threading

import pytest
from django.core.cache import CacheKeyWarning, cache, caches

import fusedb
import fusedb.django
from fusedb.testing import fusedb_processes

from adapters.django import djangoconf
from adapters.django.helpers import TIMEOUT, child_cmd, child_env, raw_db

PREFIX = b"django::1:"      # NAMESPACE + Django's default make_key (no KEY_PREFIX, version 1)


@pytest.fixture(autouse=True)
def cleared():
    yield
    cache.clear()


def test_two_processes_incr_exactly():
    """2 processes × N cache.incr of one key, started together: every value from
    1 to 2N is returned exactly once, and the key ends at 2N."""
    n = 5000
    cache.set("hits", 0)
    procs = [subprocess.Popen(child_cmd("incr", "hits", str(n)), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env()) for _ in range(2)]
    try:
        for p in procs:
            assert json.loads(p.stdout.readline()) == "ready", p.stderr.read()
        for p in procs:                 # both are attached: let them go
            p.stdin.write("go\n")
            p.stdin.flush()
        got = [json.loads(p.communicate(timeout=TIMEOUT)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(got[0] + got[1]) == list(range(1, 2 * n + 1))
    assert cache.get("hits") == 2 * n


def test_get_or_set_race_one_value_wins():
    """Threads racing get_or_set on a missing key all get the value of the one
    add() that stored (Django's get/add/get; add is atomic here)."""
    barrier = threading.Barrier(8)
    results = [None] * 8

    def racer(i):
        barrier.wait()
        results[i] = caches["default"].get_or_set("race", f"value-{i}")

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(set(results)) == 1 and results[0].startswith("value-")
    assert cache.get("race") == results[0]


def test_stored_format_ints_decimal_rest_pickled():
    cache.set("n", 41)
    cache.set("s", "41")
    cache.set("flag", True)
    with raw_db() as db:
        assert db.get(PREFIX + b"n") == b"41"
        assert db.get(PREFIX + b"s")[:1] == b"\x80"        # pickle's PROTO opcode
        assert db.get(PREFIX + b"flag")[:1] == b"\x80"
        assert db.incr(PREFIX + b"n", 1) == 42             # a FuseDB counter
    assert cache.get("n") == 42
    assert cache.get("s") == "41" and cache.get("flag") is True


@pytest.mark.parametrize("value", [True, 2 ** 70, 1.5, "1"])
def test_incr_of_what_is_not_an_int64_raises_type_error(value):
    cache.set("v", value)
    with pytest.raises(TypeError):
        cache.incr("v")
    assert cache.get("v") == value


def test_incr_past_int64_raises_overflow_and_writes_nothing():
    cache.set("big", 2 ** 63 - 1)
    with pytest.raises(OverflowError):
        cache.incr("big")
    assert cache.get("big") == 2 ** 63 - 1
    cache.set("small", -(2 ** 63))
    with pytest.raises(OverflowError):
        cache.decr("small")


def test_incr_keeps_the_timeout():
    cache.set("t", 1, timeout=100)
    cache.incr("t")
    with raw_db() as db:
        assert 90 < db.ttl(PREFIX + b"t") <= 100


def test_timeouts_reach_the_database():
    cache.set("default", 1)                       # TIMEOUT: 300 s
    cache.set("forever", 1, timeout=None)
    cache.set("float", 1, timeout=10.5)
    cache.set("gone", 1, timeout=-1)
    assert cache.add("forever", 2, timeout=0) is False      # present: not replaced
    cache.set("touched", 1, timeout=5)
    cache.touch("touched", None)
    with raw_db() as db:
        assert 290 < db.ttl(PREFIX + b"default") <= 300
        assert db.ttl(PREFIX + b"forever") == fusedb.TTL_NONE
        assert 5 < db.ttl(PREFIX + b"float") <= 10.5
        assert db.ttl(PREFIX + b"gone") == fusedb.TTL_MISSING
        assert db.ttl(PREFIX + b"touched") == fusedb.TTL_NONE
    assert cache.get("forever") == 1


def test_clear_deletes_only_its_namespace():
    cache.set_many({f"k{i}": i for i in range(600)})     # more than one clear() chunk
    caches["default"].set("x", 1, version=7)
    with raw_db() as db:
        db.put(b"app:own", b"kept")
        try:
            cache.clear()
            assert db.get(b"app:own") == b"kept"
            assert list(db.scan(prefix=b"django:")) == []
        finally:
            db.delete(b"app:own")
    assert cache.get("k1") is None


def test_key_over_max_key_size_is_refused():
    with pytest.warns(CacheKeyWarning), pytest.raises(fusedb.KeyTooLargeError):
        cache.set("k" * 600, 1)                           # a ValueError
    with pytest.warns(CacheKeyWarning):                   # Django warns over 250: it works
        cache.set("k" * 400, 1)
        assert cache.get("k" * 400) == 1


def test_value_over_max_value_size_is_refused():
    """The error names the key, the stored (pickled) size and the option."""
    hint = r"'big' takes \d+ bytes stored \(pickled\), over the database's max_value_size"
    with pytest.raises(fusedb.ValueTooLargeError, match=hint):        # a ValueError
        cache.set("big", b"x" * (16 * 1024))      # 16 KiB of data: over it once pickled
    with pytest.raises(fusedb.ValueTooLargeError, match="OPTIONS\\['max_value_size'\\]"):
        cache.add("big", b"x" * (17 * 1024))
    with pytest.raises(fusedb.ValueTooLargeError, match="'big2'"):
        cache.set_many({"ok": 1, "big2": b"x" * (17 * 1024)})
    assert cache.get("big") is None and cache.get("ok") is None


def test_set_many_larger_than_one_buffer():
    """A set_many over one buffer's bytes (one batch cannot hold it) stores every value."""
    data = {f"big{i}": os.urandom(15 * 1024) for i in range(40)}     # 600 KiB
    with raw_db() as db, pytest.raises(fusedb.InvalidArgumentError, match="one buffer"):
        with db.batch() as b:                       # what set_many meets first
            for k, v in data.items():
                b.put(PREFIX + k.encode(), v)
    assert cache.set_many(data) == []
    assert cache.get_many(list(data)) == data
    cache.delete_many(list(data))
    assert cache.get_many(list(data)) == {}


def test_close_is_a_no_op_and_one_attach_serves_every_thread():
    cache.set("c", 1)
    cache.close()
    assert cache.get("c") == 1
    seen = []

    def use():              # each thread builds its own FuseDBCache (Django's rule)
        caches["default"].incr("c")
        seen.append(caches["default"])

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len({id(c) for c in seen}) == 4 and cache.get("c") == 5
    with raw_db() as db:
        mine = [c for c in db.stats()["clients"] if c["pid"] == os.getpid()]
    assert len(mine) == 2               # the caches' one handle, and raw_db's


def test_async_methods():
    async def run():
        await cache.aset("a", 1)
        assert await cache.aincr("a", 2) == 3
        assert await cache.aadd("a", 9) is False
        assert await cache.aget_many(["a", "b"]) == {"a": 3}
        assert await cache.adelete("a") is True
        return await cache.aget("a", "missing")
    assert asyncio.run(run()) == "missing"


def test_daemon_restart_reattaches():
    """The daemon stopped under a live cache: the next operation starts a new
    daemon (start=True) and attaches again; what was stored survives."""
    cache.set("survives", "yes", timeout=None)
    location = djangoconf.location()
    done = subprocess.run([sys.executable, "-m", "fusedb", "stop", location],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert not fusedb_processes(os.path.dirname(location))
    assert cache.get("survives") == "yes"          # a new daemon, a new attach
    cache.set("after", 1)
    assert cache.get("after") == 1


def test_bad_options_refused_by_name():
    """Options that are not the daemon's are refused when the cache is built."""
    with pytest.raises(fusedb.InvalidArgumentError, match="nonsense"):
        fusedb.django.FuseDBCache(djangoconf.location(), {"OPTIONS": {"nonsense": 1}})
    with pytest.raises(fusedb.InvalidArgumentError, match="durability"):
        fusedb.django.FuseDBCache(djangoconf.location(), {"OPTIONS": {"durability": "never"}})


def test_forget_detaches_and_the_next_operation_attaches_again():
    cache.set("f", 1)
    fusedb.django.forget(djangoconf.location())
    assert fusedb.django._handles == {}
    assert cache.get("f") == 1


def _incr_in_child(n: int) -> None:
    for _ in range(n):
        cache.incr("forked")


def test_forked_child_uses_the_inherited_cache():
    """A fork()ed child (a gunicorn worker after --preload) re-attaches on first use."""
    cache.set("forked", 0)
    p = multiprocessing.get_context("fork").Process(target=_incr_in_child, args=(100,))
    p.start()
    p.join(TIMEOUT)
    assert p.exitcode == 0
    assert cache.incr("forked") == 101
