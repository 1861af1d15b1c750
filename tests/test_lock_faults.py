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

import pytest

import fusedb

from crash_child import OPTIONS
from crash_ops import client_prefixes, expect, settle

CHILD = os.path.join(os.path.dirname(__file__), "crash_child.py")
MP = dict(OPTIONS, shards=2, lock_timeout=5.0)


class Writer:
    """A crash_child client writing its own key space in a loop; its stdout (the
    acknowledged op numbers) is drained by a thread so it never blocks on it."""

    def __init__(self, path: str, seed: int, client: int, start: int, kill_after: int,
                 errlog: str):
        self.seed, self.client, self.start = seed, client, start
        self.aimed = kill_after > 0
        self.err = errlog
        with open(errlog, "ab") as err:
            self.p = subprocess.Popen(
                [sys.executable, CHILD, path, "interval", str(seed), str(start), "client",
                 str(client), str(kill_after)], stdout=subprocess.PIPE, stderr=err)
        assert self.p.stdout.read(1) == b"R", "writer did not start"
        self.data = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

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

    def aim(k: int) -> int:
        return rnd.randrange(1, 300) if k % 2 == 0 else 0

    with fusedb.open(path, **MP) as db:
        writers = [Writer(path, seed + c, c, 0, aim(c), errlog) for c in range(n)]
        for k in range(kills):
            c = k % n
            w = writers[c]
            others = [o for o in writers if o is not w]
            if not w.aimed:
                time.sleep(rnd.uniform(0.02, 0.3))
            else:
                try:
                    w.p.wait(20)          # it dies at its N-th shard lock acquisition
                except subprocess.TimeoutExpired:
                    pytest.fail(f"writer {c} never reached its kill point")
            last = w.kill_and_collect()
            after, in_flight = expect(w.seed, models[c], w.start, last, client=c)
            t = time.monotonic()
            got = state_of(db, c)
            assert time.monotonic() - t < 4.0, "reading the victim's keys took too long"
            models[c], nxt = settle(got, after, in_flight, last)
            wait_progress(others, 20, 4.0)
            writers[c] = Writer(path, w.seed, c, nxt, aim(k + n), errlog)
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
