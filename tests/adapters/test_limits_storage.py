"""fusedb.limits beyond one process's trace: processes sharing a limit through a
daemon, the URI and its errors, reset by prefix, check, wrap_exceptions, and
the moving window's capacity. Real limits 5.8.0, real daemons (stopped with
``fusedb stop`` in a finally)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from array import array

import pytest
from limits import RateLimitItemPerHour, RateLimitItemPerMinute, strategies
from limits.errors import ConfigurationError, StorageError
from limits.storage import storage_from_string

import fusedb
import fusedb.limits
from fusedb.limits import AsyncFuseDBStorage, FuseDBStorage, _core

LIMIT = 100
HITS_EACH = 150

#: A process that attaches through the URI (starting the daemon if none runs), says
#: "ready", waits for "go" and then hits three limits of LIMIT per hour HITS_EACH
#: times each, interleaved; prints how many hits each strategy admitted.
CHILD = textwrap.dedent(f"""
    import json, sys
    import fusedb.limits
    from limits import RateLimitItemPerHour, strategies
    from limits.storage import storage_from_string
    storage = storage_from_string(sys.argv[1])
    item = RateLimitItemPerHour({LIMIT})
    names = ("fixed-window", "moving-window", "sliding-window-counter")
    limiters = {{n: strategies.STRATEGIES[n](storage) for n in names}}
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    admitted = dict.fromkeys(names, 0)
    for _ in range({HITS_EACH}):
        for n in names:
            admitted[n] += limiters[n].hit(item, "shared")
    fusedb.limits.forget(storage._core.db.path)
    print(json.dumps(admitted), flush=True)
""")


def stop_daemon(path) -> None:
    """``fusedb stop PATH``; fails unless it stopped a daemon or none ran."""
    _core.forget(str(path))
    done = subprocess.run([sys.executable, "-m", "fusedb", "stop", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr


def test_two_processes_share_each_limit_exactly_through_one_daemon(tmp_path):
    path = tmp_path / "db"
    uri = f"fusedb://{path}?shards=1&max_value_size=32768"
    procs = []
    try:
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, uri], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        for p in procs:     # both attached (one started the daemon, racing the other)
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        counts = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            counts.append(json.loads(out))
        total = {n: sum(c[n] for c in counts) for n in counts[0]}
        assert total["fixed-window"] == LIMIT
        assert total["moving-window"] == LIMIT
        # The sliding window counter checks, adds, and takes back when over: as in
        # memory:// and Redis it may under-admit under a race, never over-admit.
        assert 0 < total["sliding-window-counter"] <= LIMIT
        # The URI's daemon options reached the daemon this test's children started.
        with fusedb.connect(str(path)) as db:
            assert len(db.stats()["shards"]) == 1
        storage = FuseDBStorage(uri)
        big = RateLimitItemPerHour(3000)    # 24000 bytes: fits max_value_size=32768
        assert strategies.MovingWindowRateLimiter(storage).hit(big, "x")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        stop_daemon(path)


def test_processes_and_storages_of_one_uri_share_one_handle(tmp_path):
    path = tmp_path / "db"
    try:
        sync = storage_from_string(f"fusedb://{path}?shards=1")
        same = storage_from_string(f"fusedb://{path}/")     # the same directory
        aio = storage_from_string(f"async+fusedb://{path}")
        assert isinstance(sync, FuseDBStorage) and isinstance(aio, AsyncFuseDBStorage)
        assert sync._core.db is same._core.db is aio._core.db
        item = RateLimitItemPerMinute(5)
        assert sync.incr(item.key_for("a"), 60) == 1
        assert asyncio.run(aio.incr(item.key_for("a"), 60)) == 2
        assert sync.check() and asyncio.run(aio.check())
        # The daemon stops (an operator's `fusedb stop`, a restart): the next call
        # attaches anew, starting a daemon, and finds the state it left on disk.
        done = subprocess.run([sys.executable, "-m", "fusedb", "stop", str(path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert sync.incr(item.key_for("a"), 60) == 3
        assert asyncio.run(aio.get(item.key_for("a"))) == 3
        assert sync._core.db is aio._core.db and not sync._core.db.closed
    finally:
        stop_daemon(path)


def test_a_storage_that_may_not_start_a_daemon_says_so_when_it_stops(tmp_path):
    path = tmp_path / "db"
    try:
        FuseDBStorage(f"fusedb://{path}?shards=1")          # starts the daemon
        storage = FuseDBStorage(f"fusedb://{path}?start=false")
        assert storage.incr("k", 60) == 1
        done = subprocess.run([sys.executable, "-m", "fusedb", "stop", str(path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert storage.check() is False
        with pytest.raises(fusedb.NotRunningError):
            storage.incr("k", 60)
    finally:
        stop_daemon(path)


@pytest.mark.parametrize("uri, options, message", [
    ("fusedb://relative/path", {}, "three slashes"),
    ("fusedb:relative/path", {}, "absolute path"),
    ("fusedb://", {}, "absolute path"),
    ("fusedb:///tmp/x?colour=red", {}, "unknown option(s) colour"),
    ("fusedb:///tmp/x", {"colour": "red"}, "unknown option(s) colour"),
    ("fusedb:///tmp/x?shards=two", {}, "shards='two'"),
    ("fusedb:///tmp/x?start=perhaps", {}, "start='perhaps'"),
    ("fusedb:///tmp/x?durability=maybe", {}, "durability"),
    ("fusedb:///tmp/x?shards=1&shards=2", {}, "given twice"),
    ("fusedb:///tmp/x?start=false&shards=2", {}, "need start=true"),
    ("fusedb:///tmp/x?key_prefix=", {}, "key_prefix"),
    ("fusedb:///tmp/x?split_keys=a", {}, "split_keys"),
    ("fusedb://", {"db": "not a handle"}, "FuseDB handle"),
])
def test_bad_uris_and_options_are_configuration_errors(uri, options, message):
    with pytest.raises(ConfigurationError) as e:
        storage_from_string(uri, **options)
    assert message in str(e.value)
    with pytest.raises(ConfigurationError):
        storage_from_string("async+" + uri, **options)


def test_query_values_are_converted_and_keyword_options_win():
    config = _core.parse("fusedb:///srv/db/?shards=3&start=yes&timeout=2.5&key_prefix=RL"
                         "&durability=sync&pin=true&max_value_size=32768", {"shards": 2})
    assert config.path == "/srv/db" and config.start and config.timeout == 2.5
    assert config.key_prefix == "RL"
    assert config.daemon == {"shards": 2, "durability": "sync", "pin": True,
                             "max_value_size": 32768}


def test_without_start_nothing_is_started(tmp_path):
    with pytest.raises(fusedb.NotRunningError):
        FuseDBStorage(f"fusedb://{tmp_path}/db?start=false")
    assert not (tmp_path / "db").exists()


def test_reset_deletes_only_its_own_prefix_and_counts(tmp_path):
    with fusedb.open(str(tmp_path / "db")) as db:
        db.put(b"other", b"kept")
        a = FuseDBStorage("fusedb://", db=db)                    # prefix LIMITS
        b = FuseDBStorage("fusedb://", db=db, key_prefix="B")
        item = RateLimitItemPerMinute(10)
        for i in range(150):     # more than one delete batch
            a.incr(item.key_for(str(i)), 60)
        strategies.MovingWindowRateLimiter(a).hit(item, "moving")
        b.incr(item.key_for("1"), 60)
        assert db.get(b"LIMITS:" + item.key_for("1").encode()) == b"1"
        assert a.reset() == 151
        assert a.get(item.key_for("1")) == 0
        assert b.get(item.key_for("1")) == 1
        assert db.get(b"other") == b"kept"
        assert asyncio.run(AsyncFuseDBStorage("async+fusedb://", db=db, key_prefix="B")
                           .reset()) == 1


def test_check_is_false_once_the_database_is_gone(tmp_path):
    db = fusedb.open(str(tmp_path / "db"))
    storage = FuseDBStorage("fusedb://", db=db)
    aio = AsyncFuseDBStorage("async+fusedb://", db=db)
    assert storage.check() and asyncio.run(aio.check())
    db.close()
    assert storage.check() is False
    assert asyncio.run(aio.check()) is False


@pytest.mark.parametrize("wrap", [True, False])
def test_fusedb_errors_become_storage_errors_when_wrapped(tmp_path, wrap):
    too_long = "x" * 600       # keys are at most max_key_size (512) bytes
    with fusedb.open(str(tmp_path / "db")) as db:
        for storage in (FuseDBStorage("fusedb://", db=db, wrap_exceptions=wrap),
                        AsyncFuseDBStorage("async+fusedb://", db=db, wrap_exceptions=wrap)):
            calls = [(storage.incr, too_long, 60), (storage.get, too_long),
                     (storage.acquire_entry, too_long, 5, 60),
                     (storage.acquire_sliding_window_entry, too_long, 5, 60)]
            for method, *arguments in calls:
                with pytest.raises(StorageError if wrap else fusedb.KeyTooLargeError) as e:
                    result = method(*arguments)
                    if asyncio.iscoroutine(result):
                        asyncio.run(result)
                if wrap:
                    assert isinstance(e.value.storage_error, fusedb.KeyTooLargeError)


def test_a_moving_window_larger_than_a_value_is_refused_at_the_first_hit(tmp_path):
    with fusedb.open(str(tmp_path / "db")) as db:     # max_value_size 16 KiB: 2048 entries
        limiter = strategies.MovingWindowRateLimiter(FuseDBStorage("fusedb://", db=db))
        assert limiter.hit(RateLimitItemPerMinute(2048), "a", cost=2048)
        with pytest.raises(ConfigurationError, match="max_value_size"):
            limiter.hit(RateLimitItemPerMinute(2049), "b")
        key = b"LIMITS:" + RateLimitItemPerMinute(2048).key_for("a").encode() + b"/moving"
        assert len(db.get(key)) == 8 * 2048


def test_a_refused_moving_window_hit_writes_nothing(tmp_path):
    with fusedb.open(str(tmp_path / "db")) as db:
        limiter = strategies.MovingWindowRateLimiter(FuseDBStorage("fusedb://", db=db))
        item = RateLimitItemPerMinute(3)
        assert all(limiter.hit(item, "a") for _ in range(3))
        key = b"LIMITS:" + item.key_for("a").encode() + b"/moving"
        value, ttl = db.get(key), db.ttl(key)
        written = db.stats()["logical_bytes_written"]
        assert not any(limiter.hit(item, "a") for _ in range(50))
        assert db.stats()["logical_bytes_written"] == written
        assert db.get(key) == value and db.ttl(key) <= ttl


def test_a_window_whose_entries_all_left_it_reads_as_empty(tmp_path):
    """A stored window can outlive its entries (a refused hit that lost a race
    rewrites it with a fresh expiry): get_moving_window then says (now, 0), as
    memory:// does once its purge removed them, not the stale entry's time."""
    with fusedb.open(str(tmp_path / "db")) as db:
        storage = FuseDBStorage("fusedb://", db=db)
        old = time.time() - 100
        db.put(storage._core.window_key("w"), array("d", [old, old - 1]).tobytes())
        before = time.time()
        start, count = storage.get_moving_window("w", 10, 60)
        assert count == 0 and before <= start <= time.time()
        assert storage.acquire_entry("w", 10, 60) is True
        assert storage.get_moving_window("w", 10, 60)[1] == 1
