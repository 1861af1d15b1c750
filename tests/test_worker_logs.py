"""Worker processes log one line per handled event through ``logging`` (to their
stderr, which is the router's) and print a traceback only for a real bug
(fusedb/worker/process.py, fusedb/worker/role.py, fusedb/shard/worker.py).

Each input is a real router process whose stderr (and so its workers') the
test reads: the router SIGKILLed while it holds a shard lock (its orphaned
workers), the meta lock held past ``lock_timeout`` by a live process while the
workers merge and split, a worker restarted on a full disk.
"""

from __future__ import annotations

import os
import subprocess
import sys

import fusedb
from fusedb.shm import region

ORPHAN_CHILD = r"""
import os, signal, sys, fusedb
from fusedb import testing
db = fusedb.open(sys.argv[1], shards=int(sys.argv[2]))
for i in range(300):
    db.put(b"%c-k%d" % (i % 2 * 0x80 + 0x10, i), b"v%d" % i)
testing.shard_lock(db, 0).acquire()
os.kill(os.getpid(), signal.SIGKILL)      # killed inside a critical section
"""


def run_child(code: str, *argv: str, timeout: float = 120) -> str:
    """Run ``code`` in a child process; its stderr, which holds its worker
    processes' too (read until they have all exited)."""
    p = subprocess.run([sys.executable, "-c", code, *argv], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.stderr.decode()


def test_orphaned_workers_of_a_router_killed_holding_a_lock_log_one_line(tmp_path):
    """SIGKILL of the router inside a critical section of shard 0: its workers
    notice they are orphaned and exit, logging the dead holder in one line, with
    no traceback (RepairNeeded is a handled condition); the next open recovers
    every write."""
    for shards in (1, 2):
        path = str(tmp_path / f"db{shards}")
        err = run_child(ORPHAN_CHILD, path, str(shards))
        assert "Traceback" not in err, err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines and all(ln.startswith("fusedb: ") for ln in lines), err
        assert any("holder died" in ln for ln in lines), err
        with fusedb.open(path, shards=shards) as db:
            assert len(dict(db.scan())) == 300
        assert not region.leftovers(region.tag_for(path))


META_HOLD_CHILD = r"""
import sys, threading, time, fusedb
from fusedb import testing
from fusedb.testing import TINY
path = sys.argv[1]
with fusedb.open(path, **dict(TINY, shards=2, lock_timeout=0.5)) as db:
    pids = [w["pid"] for w in db.stats()["workers"]]
    n = 0
    def put_some(k):
        global n
        for _ in range(k):
            try:
                db.put(b"%c-a%05d" % (n % 2 * 0x80 + 0x10, n), b"x" * 50)
                n += 1
            except fusedb.LockTimeoutError:
                time.sleep(0.05)         # the worker waits for the meta lock
    put_some(200)
    held = threading.Event()
    def hold():                          # a live process keeps the meta lock 2 s
        with testing.meta_lock(db):
            held.set()
            time.sleep(2.0)
    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        put_some(20)                     # buffers fill: merge and split rounds
    t.join()
    put_some(300)
    db.flush()
    got = dict(db.scan())
    assert len(got) == n, (len(got), n)
    assert [w["pid"] for w in db.stats()["workers"]] == pids, "a worker died"
    assert db.stats()["splits"] > 0
print("ok", file=sys.stderr)
"""


def test_meta_lock_held_past_lock_timeout_is_waited_for_and_logged(tmp_path):
    """A live process holds the meta lock past lock_timeout while the workers
    merge and split: the workers wait (a split's publication cannot be given up
    half way), log it in one line per lock_timeout, and go on once it is free;
    no worker dies (it used to, with a traceback, and be restarted), and no key
    is lost."""
    err = run_child(META_HOLD_CHILD, str(tmp_path / "db"))
    assert err.rstrip().endswith("ok"), err
    assert "Traceback" not in err and "restarting" not in err, err
    assert "the meta lock is held past lock_timeout=0.5s" in err, err
    assert all(ln.startswith("fusedb: ") for ln in err.splitlines()[:-1] if ln), err


RESTART_CHILD = r"""
import os, signal, sys, time, fusedb
from fusedb.testing import TINY
path, marker = sys.argv[1], sys.argv[2]
with fusedb.open(path, **dict(TINY, shards=2, lock_timeout=5.0)) as db:
    for i in range(300):
        db.put(b"\x01k%d" % i, b"v" * 20)
    open(marker, "w").close()            # the disk is full from here on
    os.kill(db.stats()["workers"][0]["pid"], signal.SIGKILL)
    end = time.monotonic() + 2
    i = 0
    while time.monotonic() < end:
        try:
            db.put(b"\x01z%d" % i, b"v" * 20)
            i += 1
        except fusedb.FuseDBError:
            time.sleep(0.05)
    os.unlink(marker)                    # space again
    deadline = time.monotonic() + 20
    while any(w["background_error"] for w in db.stats()["workers"]):
        assert time.monotonic() < deadline, db.stats()["workers"]
        time.sleep(0.05)
    db.flush()
    assert len(dict(db.scan())) == 300 + i
print("ok", file=sys.stderr)
"""


def test_worker_restarted_on_a_full_disk_logs_lines_not_tracebacks(tmp_path):
    """A worker killed while the disk is full is restarted on the full disk
    (ENOSPC in each of the write paths): every worker logs lines, none prints a
    traceback, and the database heals once space is back."""
    for point in ("segment.write", "wal.write", "manifest.write"):
        marker = str(tmp_path / "full")
        env = dict(os.environ, FUSEDB_WORKER_FAILPOINTS=f"{point}=oserror:ENOSPC:{marker}")
        p = subprocess.run([sys.executable, "-c", RESTART_CHILD, str(tmp_path / point), marker],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
                           env=env)
        err = p.stderr.decode()
        assert err.rstrip().endswith("ok"), err
        assert "Traceback" not in err, err
        assert "restarting it" in err, err        # the supervisor's one line
