"""Processes killed at the worst moment for the shard locks: right after taking
one (before doing anything under it), at random moments, with a fork child
still alive, a thread that ends holding a lock, and a holder that is stopped
(alive). Real processes, real SIGKILLs; every wait here is bounded.

The invariant under test (docs/design.md, "Locks across processes"): a dead
holder is always recognised (its ownership is recorded by the kernel at the
very acquisition), its shard is rebuilt from the WAL by the shard's worker, the
other processes go on, and the data is exactly the acknowledged state.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

import fusedb
from fusedb import testing


from fusedb.testing import TINY
from crash_child import OPTIONS
from crash_ops import client_prefixes, expect, settle
from mp_helpers import Client

CHILD = os.path.join(os.path.dirname(__file__), "crash_child.py")
MP = dict(OPTIONS, shards=2, lock_timeout=5.0)


class Writer:
    """A crash_child client writing its own key space in a loop; its stdout (the
    acknowledged op numbers) is drained by a thread so it never blocks on it."""

    def __init__(self, path: str, seed: int, client: int, start: int, kill_after: int,
                 errlog: str):
        self.seed, self.client, self.start = seed, client, start
        self.err = errlog
        with open(errlog, "ab") as err:
            self.p = subprocess.Popen(
                [sys.executable, CHILD, path, "interval", str(seed), str(start), "client",
                 str(client), str(kill_after)], stdout=subprocess.PIPE, stderr=err)
        self.data = bytearray()
        self._reader = None

    def ready(self) -> Writer:
        """Wait until it has attached (and can be aimed with SIGUSR1)."""
        assert self.p.stdout.read(1) == b"R", f"writer did not start:\n{self.stderr()}"
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        return self

    def _drain(self) -> None:
        while True:
            chunk = self.p.stdout.read1(65536)
            if not chunk:
                return
            self.data += chunk

    def acked(self) -> int:
        return len(self.data) // 4

    def stderr(self) -> str:
        with open(self.err, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def kill_and_collect(self) -> int:
        """SIGKILL (if still alive), reap, return the last acknowledged op number."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(30)
        if self._reader is not None:
            self._reader.join(30)
        self.p.stdout.close()
        n = len(self.data) // 4
        acked = [int.from_bytes(self.data[i * 4:i * 4 + 4], "little") for i in range(n)]
        assert acked == list(range(self.start, self.start + n))
        return self.start + n - 1


def state_of(db, client: int) -> dict:
    return {k: v for pre in client_prefixes(client) for k, v in db.scan(prefix=pre)}


def wait_progress(writers, need: int, limit: float) -> None:
    """Every writer acknowledges ``need`` more ops within ``limit`` seconds (well
    under lock_timeout): none is wedged behind a lock."""
    marks = [w.acked() for w in writers]
    deadline = time.monotonic() + limit
    while True:
        behind = [w for w, m in zip(writers, marks) if w.acked() < m + need]
        if not behind:
            return
        for w in behind:
            assert w.p.poll() is None, \
                f"writer {w.client} exited with {w.p.returncode}:\n{w.stderr()}"
        assert time.monotonic() < deadline, \
            f"writers {[w.client for w in behind]} made no progress in {limit}s (wedged)"
        time.sleep(0.01)


def kill_storm(tmp_path, kills: int, seed: int) -> None:
    """``kills`` SIGKILLs into 3 clients writing in a loop, every other one aimed
    at the moment right after the victim took a shard lock (failpoint
    ``lock.acquired``), the rest at random moments. After each: the victim's key
    space holds exactly its acknowledged state (or that plus its op in flight),
    and the other writers keep going. At the end the reopened database holds
    exactly every writer's acknowledged state."""
    path = str(tmp_path / "db")
    errlog = str(tmp_path / "writers.err")
    rnd = random.Random(seed)
    n = 3
    models: list[dict] = [{} for _ in range(n)]

    def start(c: int, at: int) -> Writer:
        return Writer(path, seed + c, c, at, rnd.randrange(1, 30), errlog)

    with fusedb.open(path, **MP) as db:
        writers = [start(c, 0) for c in range(n)]
        for w in writers:
            w.ready()
        for k in range(kills):
            c = k % n
            w = writers[c]
            others = [o for o in writers if o is not w]
            time.sleep(rnd.uniform(0.02, 0.3))
            if k % 2 == 0:
                # Aimed: it dies right after its N-th lock acquisition from now on.
                w.p.send_signal(signal.SIGUSR1)
                try:
                    w.p.wait(20)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"writer {c} never reached its kill point")
            last = w.kill_and_collect()
            after, in_flight = expect(w.seed, models[c], w.start, last, client=c)
            t = time.monotonic()
            got = state_of(db, c)
            assert time.monotonic() - t < 4.0, "reading the victim's keys took too long"
            models[c], nxt = settle(got, after, in_flight, last)
            writers[c] = start(c, nxt)       # starts up while the others are watched
            wait_progress(others, 20, 4.0)
            writers[c].ready()
        for c, w in enumerate(writers):
            last = w.kill_and_collect()
            after, in_flight = expect(w.seed, models[c], w.start, last, client=c)
            models[c], _nxt = settle(state_of(db, c), after, in_flight, last)
        assert sum(len(m) for m in models) > 50, "the writers were meant to get work done"
        repairs = sum(wk["repairs"] for wk in db.stats()["workers"])
    with fusedb.open(path, **OPTIONS) as db:
        assert dict(db.scan()) == {k: v for m in models for k, v in m.items()}
    assert repairs > 0, "no kill landed inside a critical section"


def test_twenty_kills_aimed_right_after_taking_a_lock_never_wedge_the_others(tmp_path):
    kill_storm(tmp_path, 20, 101)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_kill_storms_repeated(tmp_path, seed):
    kill_storm(tmp_path, 60, 200 + seed)


# -- who counts as the holder: forks, threads, stopped processes ------------------------------


def put_within(db, key: bytes, limit: float) -> None:
    t = time.monotonic()
    db.put(key, b"x")
    assert time.monotonic() - t < limit, f"put took {time.monotonic() - t:.1f}s"


def test_fork_child_of_a_holder_neither_holds_nor_hides_its_death(tmp_path):
    """A fork() child does not inherit a lock its parent holds: killing the child
    changes nothing (the parent still holds it, no repair), and killing the
    parent is recognised while the child lives on (the shard is repaired)."""
    path = str(tmp_path / "db")
    with fusedb.open(path, **dict(TINY, shards=2, lock_timeout=5.0)) as db:
        db.put(b"\x10k", b"v")
        c = Client(path)
        assert c("hold_lock", 0) == "held"
        lock = testing.shard_lock(db, 0)
        first = c("fork")
        os.kill(first, signal.SIGKILL)
        time.sleep(0.3)                       # a worker tick or more
        assert lock.holder() == c.proc.pid and not lock.needs_repair()
        assert testing.repairs(db, 0) == 0
        child = c("fork")
        try:
            os.kill(c.proc.pid, signal.SIGKILL)
            c.proc.join()
            put_within(db, b"\x10after", 3.0)
            assert psutil.pid_exists(child), "the child was meant to outlive its parent"
        finally:
            os.kill(child, signal.SIGKILL)
        assert db.stats()["workers"][0]["repairs"] == 1
        assert dict(db.scan()) == {b"\x10k": b"v", b"\x10after": b"x"}


def test_thread_that_ends_holding_a_shard_lock_counts_as_dead(tmp_path):
    """Robust mutexes belong to threads: a thread that ends holding a shard lock
    leaves it owner-dead, and the shard is repaired while its process (alive)
    goes on writing."""
    path = str(tmp_path / "db")
    with fusedb.open(path, **dict(TINY, shards=2, lock_timeout=5.0)) as db:
        db.put(b"\x10k", b"v")
        c = Client(path)
        assert c("thread_ends_holding", 0) == "ended"
        put_within(db, b"\x10after", 3.0)
        c("put", b"\x10from-client", b"y")    # the process itself is fine too
        c.close()
        assert db.stats()["workers"][0]["repairs"] == 1
        assert dict(db.scan()) == {b"\x10k": b"v", b"\x10after": b"x",
                                   b"\x10from-client": b"y"}


def test_stopped_holder_is_alive_so_waiters_time_out(tmp_path):
    """SIGSTOP looks like a stall, not a death: waiters get LockTimeoutError
    naming the holder's pid and nothing is repaired; once it is killed, the shard
    is repaired and writes go on."""
    path = str(tmp_path / "db")
    with fusedb.open(path, **dict(TINY, shards=2, lock_timeout=1.0)) as db:
        c = Client(path)
        assert c("hold_lock", 0) == "held"
        os.kill(c.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(fusedb.LockTimeoutError, match=f"held by pid {c.proc.pid}"):
                db.put(b"\x10k", b"v")
            db.put(b"\x90k", b"v")                # the other shard is not affected
            assert testing.repairs(db, 0) == 0
        finally:
            os.kill(c.proc.pid, signal.SIGKILL)
            os.kill(c.proc.pid, signal.SIGCONT)
            c.proc.join()
        put_within(db, b"\x10k", 0.9)
        assert db.stats()["workers"][0]["repairs"] == 1


@pytest.mark.parametrize("which", ["meta", "manifest"])
def test_client_killed_holding_the_meta_or_manifest_lock(tmp_path, which):
    """Their critical sections leave nothing half-done: the router's supervisor
    (or the next locker) recovers the lock at once, and merges, splits and
    manifest writes, which need both, go on."""
    path = str(tmp_path / "db")
    with fusedb.open(path, **dict(TINY, shards=2, lock_timeout=5.0)) as db:
        c = Client(path)
        assert c("hold_lock", which) == "held"
        os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.join()
        lock = testing.lock_of(db, which)
        deadline = time.monotonic() + 2
        while lock.owner_died() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not lock.owner_died() and lock.holder() != c.proc.pid
        m = {}
        for i in range(400):                  # merges and splits need both locks
            k = bytes([0x10 + 0x80 * (i % 2)]) + b"k%03d" % i
            db.put(k, b"v" * 50)
            m[k] = b"v" * 50
        t = time.monotonic()
        db.flush()
        assert time.monotonic() - t < 5.0
        assert db.stats()["splits"] > 0 and dict(db.scan()) == m
        assert all(w["repairs"] == 0 for w in db.stats()["workers"])
    with fusedb.open(path, **TINY) as db:
        assert dict(db.scan()) == m
