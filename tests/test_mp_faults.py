"""Fault tests of the multiprocess engine with real processes and SIGKILL: a client
holding a shard lock, clients killed mid-write, a worker killed mid-merge and
while holding its lock, the router, and everything at once. After each: no
process hangs (every wait here is bounded), nothing acknowledged is lost, and
/dev/shm is clean after the next close (checked by conftest for every test)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import psutil
import pytest

import fusedb
from fusedb import testing

from fusedb.testing import TINY
from crash_child import OPTIONS
from crash_ops import expect, last_acked, settle
from mp_helpers import Client

CHILD = os.path.join(os.path.dirname(__file__), "crash_child.py")
MP = dict(TINY, shards=2, lock_timeout=5.0)


def start_child(path: str, how: str, seed: int, start: int, mode: str = "interval"):
    p = subprocess.Popen([sys.executable, CHILD, path, mode, str(seed), str(start), how],
                         stdout=subprocess.PIPE)
    assert p.stdout.read(1) == b"R", f"{how} child did not start"
    return p


def timed(fn, limit: float):
    t = time.monotonic()
    result = fn()
    took = time.monotonic() - t
    assert took < limit, f"took {took:.1f}s (limit {limit}s)"
    return result


# -- clients --------------------------------------------------------------------------


def test_client_killed_holding_a_shard_lock_is_repaired(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.open(path, **MP) as db:
        for i in range(200):
            db.put(b"\x10k%03d" % i, b"v%d" % i)
        c = Client(path)
        assert c("hold_lock", 0) == "held"
        os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.join()
        # Shard 0's worker sees the dead holder and rebuilds the shard from the WAL;
        # the writer waits (well under lock_timeout) and goes on.
        timed(lambda: db.put(b"\x10new", b"x"), 3.0)
        got = dict(db.scan())
        assert len(got) == 201 and got[b"\x10k007"] == b"v7" and got[b"\x10new"] == b"x"
        assert db.stats()["workers"][0]["repairs"] == 1
        assert db.stats()["workers"][1]["repairs"] == 0
        db.put(b"\x10k000", b"after")          # the repaired shard takes writes
    with fusedb.open(path, **TINY) as db:
        assert db.get(b"\x10k000") == b"after" and db.get(b"\x10k199") == b"v199"


def test_clients_killed_mid_write_lose_nothing_acknowledged(tmp_path):
    """Rounds of: a client process writes (puts, incrs, deletes, batches) and is
    SIGKILLed at a random moment, maybe inside a shard lock. The router then
    sees exactly the state after its last acknowledged op or the one in flight."""
    path = str(tmp_path / "db")
    seed = 5
    rnd = random.Random(seed)
    m: dict = {}
    start = 0
    with fusedb.open(path, **dict(OPTIONS, shards=2, lock_timeout=5.0)) as db:
        for _ in range(6):
            p = start_child(path, "client", seed, start)
            time.sleep(rnd.uniform(0.05, 0.4))
            p.send_signal(signal.SIGKILL)
            p.wait()
            last = last_acked(p, start)
            after, in_flight = expect(seed, m, start, last)
            got = timed(lambda: dict(db.scan()), 4.0)
            m, start = settle(got, after, in_flight, last)
        assert start > 20, "the clients were meant to get work done"
    with fusedb.open(path, **OPTIONS) as db:
        assert dict(db.scan()) == m


# -- workers ----------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["merge.before_publish", "merge.publish_locked"])
def test_worker_killed_mid_merge_is_restarted(tmp_path, monkeypatch, point):
    """SIGKILL of a worker mid-merge (and with the shard lock taken, so the new
    worker must repair the shard): the router starts a new one, writers never
    notice beyond a short wait, nothing is lost."""
    path = str(tmp_path / "db")
    marker = str(tmp_path / "killed")
    monkeypatch.setenv("FUSEDB_WORKER_FAILPOINTS", f"{point}=killonce:{marker}")
    with fusedb.open(path, **MP) as db:
        first = [w["pid"] for w in db.stats()["workers"]]
        m = {}
        for i in range(1500):
            k = bytes([i % 2 * 0x80 + 1]) + b"k%03d" % (i % 300)
            db.put(k, b"v%d" % i)
            m[k] = b"v%d" % i
            if i % 7 == 0:
                db.incr(b"\x01n")
        assert os.path.exists(marker), "no worker reached the failpoint"
        deadline = time.monotonic() + 10
        while any(not w.get("alive", True) or w["pid"] == 0
                  for w in db.stats()["workers"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        now = [w["pid"] for w in db.stats()["workers"]]
        assert now != first and all(psutil.pid_exists(p) for p in now)
        got = dict(db.scan())
        assert got == {**m, b"\x01n": b"%d" % len(range(0, 1500, 7))}
        db.flush()
        assert dict(db.scan()) == got
        if point == "merge.publish_locked":
            assert sum(w["repairs"] for w in db.stats()["workers"]) == 1
    with fusedb.open(path, **TINY) as db:
        assert dict(db.scan()) == got


# -- the router and everything -------------------------------------------------------------


def worker_pids(router_pid: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = [c for c in psutil.Process(router_pid).children()
                if "fusedb.worker.process" in " ".join(c.cmdline())]
        if len(kids) == 2:
            return [c.pid for c in kids]
        time.sleep(0.02)
    raise AssertionError("the router did not start 2 workers")


@pytest.mark.parametrize("what", ["router", "everything"])
@pytest.mark.parametrize("mode", ["sync", "interval"])
def test_router_killed(tmp_path, what, mode):
    """SIGKILL the router (its workers notice, flush their WAL rings and exit), or
    the router and its workers at once. The next open recovers every
    acknowledged write and removes the stale shared memory."""
    path = str(tmp_path / "db")
    seed = 9
    m: dict = {}
    start = 0
    for _ in range(2):
        p = start_child(path, "router", seed, start, mode)
        workers = worker_pids(p.pid)
        time.sleep(0.3)
        p.send_signal(signal.SIGKILL)
        if what == "everything":
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
        p.wait()
        last = last_acked(p, start)
        for pid in workers:          # orphaned workers exit on their own
            try:
                psutil.Process(pid).wait(10)
            except psutil.NoSuchProcess:
                pass
        after, in_flight = expect(seed, m, start, last)
        with timed(lambda: fusedb.open(path, **dict(OPTIONS, shards=2)), 20.0) as db:
            got = dict(db.scan())
        m, start = settle(got, after, in_flight, last)
    assert start > 20


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("how", ["embedded", "router"])
def test_interrupted_writer_closes_cleanly_with_exact_state(tmp_path, how, sig):
    """Ctrl-C or SIGTERM lands at a random bytecode of a process busy writing.
    FuseDB's handlers never raise inside its own code (fusedb/runtime/signals.py), so
    the exit goes through a clean close: no WAL left, the state exact."""
    path = str(tmp_path / "db")
    seed = 13
    rnd = random.Random(seed)
    m: dict = {}
    start = 0
    for _ in range(3):
        p = start_child(path, how, seed, start)
        time.sleep(rnd.uniform(0.1, 0.4))
        p.send_signal(sig)
        code = p.wait(60)
        assert code in (-signal.SIGINT, 128 + signal.SIGTERM), code
        last = last_acked(p, start)
        assert not [f for f in os.listdir(path) if f.startswith("wal-")], "not a clean close"
        after, in_flight = expect(seed, m, start, last)
        with fusedb.open(path, **OPTIONS) as db:
            got = dict(db.scan())
        m, start = settle(got, after, in_flight, last)


def test_ctrl_c_storm_on_a_client_never_breaks_a_lock(tmp_path):
    """SIGINT every ~1 ms at a client busy writing: KeyboardInterrupt lands only
    outside FuseDB's code (fusedb/runtime/signals.py), so no lock is left taken, no
    buffer half-written, and no repair is ever needed."""
    path = str(tmp_path / "db")
    with fusedb.open(path, **MP) as db:
        p = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                                                           "sigint_child.py"), path, "3.0"],
                             stdout=subprocess.PIPE)
        assert p.stdout.read(1) == b"R"
        rnd = random.Random(3)
        sent = 0
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end and p.poll() is None:
            p.send_signal(signal.SIGINT)
            sent += 1
            time.sleep(rnd.uniform(0.0002, 0.002))
        assert p.wait(60) == 0
        n, interrupts = map(int, p.stdout.read().split())
        p.stdout.close()
        assert sent > 100 and interrupts > 0
        # Every key holds the value of its last put (op n-100+j wrote key j).
        for j in range(100):
            i = n - 100 + j
            k = b"%c-k%03d" % (i % 2 * 0x80 + 0x10, i % 100)
            assert db.get(k) == b"v%d" % i
        assert all(w["repairs"] == 0 for w in db.stats()["workers"])
        assert not testing.locks_need_repair(db)
        timed(lambda: db.put(b"\x10after", b"x"), 2.0)          # and not wedged


UPDATE_FN_CHILD = r"""
import os, sys, time
import fusedb
path, shards = sys.argv[1], int(sys.argv[2])
db = fusedb.open(path, **({"shards": shards} if shards else {}))
db.put(b"k", b"before")

def fn(cur):
    os.write(1, b"R")
    while True:            # never returns: only a signal ends it
        time.sleep(0.01)
try:
    db.update(b"k", fn)
except KeyboardInterrupt:
    pass
assert db.get(b"k") == b"before", db.get(b"k")
assert db.update(b"k", lambda cur: cur + b"!") == b"before!"
db.close()
os.write(1, b" ok")
"""


@pytest.mark.parametrize("shards", [0, 2], ids=["embedded", "multiprocess"])
def test_ctrl_c_interrupts_an_update_fn_that_never_returns(tmp_path, shards):
    """update()'s fn is application code: a SIGINT landing in it raises
    KeyboardInterrupt there (the lock is released, nothing written), instead of
    being deferred as inside FuseDB's own code until fn returns (never, here)."""
    p = subprocess.Popen([sys.executable, "-c", UPDATE_FN_CHILD, str(tmp_path / "db"),
                          str(shards)], stdout=subprocess.PIPE)
    try:
        assert p.stdout.read(1) == b"R"
        time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0
        assert p.stdout.read() == b" ok"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def test_worker_killed_mid_routing_change(tmp_path, monkeypatch):
    """A worker SIGKILLed inside a split's routing change (seqlock odd, meta and
    shard locks held): the router frees the meta lock and ends the seqlock
    update, the restarted worker repairs the shard; nobody spins or hangs."""
    path = str(tmp_path / "db")
    marker = str(tmp_path / "killed")
    monkeypatch.setenv("FUSEDB_WORKER_FAILPOINTS", f"route.switch=killonce:{marker}")
    with fusedb.open(path, **MP) as db:
        m = {}
        for i in range(1500):
            k = b"\x01k%04d" % i
            timed(lambda k=k, i=i: db.put(k, b"v%d" % i), 8.0)
            m[k] = b"v%d" % i
        assert os.path.exists(marker), "no split reached the failpoint"
        assert timed(lambda: dict(db.scan()), 8.0) == m
        # The route version is even again (it is odd only while a live process
        # switches copies, which takes microseconds).
        deadline = time.monotonic() + 2
        while testing.routing_changing(db) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert not testing.routing_changing(db)
        assert sum(w["repairs"] for w in db.stats()["workers"]) == 1


def test_new_open_waits_for_the_workers_of_a_dead_router(tmp_path, monkeypatch):
    """The router is SIGKILLed while a worker is in a slow merge. Its workers keep
    LOCK (inherited descriptor), so a new open waits until they have flushed and
    exited, instead of recovering under a worker still writing files."""
    path = str(tmp_path / "db")
    marker = str(tmp_path / "in-merge")
    monkeypatch.setenv("FUSEDB_WORKER_FAILPOINTS", f"merge.before_publish=marksleep:{marker}:4")
    seed = 21
    p = start_child(path, "router", seed, 0)
    workers = worker_pids(p.pid)
    deadline = time.monotonic() + 30
    while not os.path.exists(marker):                # a worker is inside its merge
        assert time.monotonic() < deadline, "no merge started"
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    last = last_acked(p, 0)
    with fusedb.open(path, **OPTIONS) as db:        # blocks until the workers are gone
        assert not any(psutil.pid_exists(w) and psutil.Process(w).status() !=
                       psutil.STATUS_ZOMBIE for w in workers)
        got = dict(db.scan())
    after, in_flight = expect(seed, {}, 0, last)
    settle(got, after, in_flight, last)
    with fusedb.open(path, **OPTIONS) as db:        # and it stays consistent
        assert dict(db.scan()) == got


def test_a_client_stalled_holding_the_gil_is_not_taken_over(tmp_path):
    """A client thread in a long C call holds its process's GIL for seconds while
    another thread of it is between taking a shard lock and releasing it. The
    holder is alive: no repair may happen and the lock stays a mutex."""
    path = str(tmp_path / "db")
    code = ("import sys, threading, fusedb\n"
            "db = fusedb.connect(sys.argv[1])\n"
            "def hog():\n"
            "    for _ in range(3):\n"
            "        sum(range(40_000_000))\n"
            "t = threading.Thread(target=hog)\n"
            "t.start()\n"
            "n = 0\n"
            "while t.is_alive():\n"
            "    db.put(b'\\x10k%d' % (n % 50), b'v%d' % n)\n"
            "    n += 1\n"
            "db.close()\n"
            "print(n)\n")
    with fusedb.open(path, **MP) as db:
        out = subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) > 0
        assert all(w["repairs"] == 0 for w in db.stats()["workers"])
        assert not testing.locks_need_repair(db)
        timed(lambda: db.put(b"\x10after", b"x"), 2.0)
