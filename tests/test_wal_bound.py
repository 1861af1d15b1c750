"""The WAL on disk stays bounded per shard whatever the key pattern and whatever
the scheduling (issue 9, item 1; docs/design.md, "Scheduler" rule 4,
"Durability" and "Back-pressure").

A buffer that never fills (a cold leaf's, or one whose counter is updated in
place) used to keep every WAL file after its first record on disk: the inputs
of the issue grew 39 MiB and 23 MiB of WAL. The scheduler now merges the buffers
that hold the oldest log positions once the files pass ``wal_max_bytes`` (a
trigger, as RocksDB's ``max_total_wal_size``), and the files reaching
``wal_limit_bytes = wal_max_bytes + wal_file_bytes`` hold writers back until
those merges delete the oldest files (back-pressure through the WAL ring).

So the tests assert a deterministic bound, not a measured slack: the WAL on
disk never passes ``wal_limit_bytes`` plus one ring (what writers may append
once the limit holds them back) plus a 64-byte header per WAL file started
meanwhile (:func:`hard_bound`). Before the back-pressure the embedded long test
saw 7-14 MiB over a 4 MiB bound on a loaded 2-core machine.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time

import psutil
import pytest

import fusedb
import fusedb.options
from fusedb import testing
from fusedb.core import failpoints
from fusedb.core.scheduler import Decision, LeafView, Policy, ShardView, decide, wal_target
from fusedb.wal.reader import list_files

from crash_ops import expect, settle
from fault_helpers import Disk

MiB = 1 << 20
#: The options of the issue's inputs. The issue gives no ``buffer_slots`` and no
#: value size: with the default 2048 slots a 64 KiB buffer is refused at open,
#: and 256 slots with 600-byte values reproduce its 39 MiB of WAL for 7 MiB of
#: segments. The bound is the default, 4 * arena_bytes = 16 MiB.
ISSUE = dict(split_keys=[b"m"], arena_bytes=4 * MiB, buffer_bytes=64 << 10,
             wal_file_bytes=256 << 10, buffer_slots=256)


def wal_on_disk(path: str) -> dict[int, int]:
    """Bytes of each shard's WAL files, from the directory (not from FuseDB's count)."""
    out = {}
    for shard, files in list_files(path).items():
        n = 0
        for _no, p in files:
            try:
                n += os.stat(p).st_size
            except FileNotFoundError:     # deleted by the worker meanwhile
                pass
        out[shard] = n
    return out


def hard_bound(db) -> int:
    """Most bytes of WAL files one shard of ``db`` ever has on disk: the limit
    (``wal_max_bytes + wal_file_bytes``), plus one ring, plus the header of every
    file started while the ring is written out: the first rotation may be due
    at once, each later one takes ``wal_file_bytes - 64`` bytes of the ring."""
    o = testing.options(db)
    limit = o.wal_max_bytes + o.wal_file_bytes
    assert o.wal_limit_bytes == limit
    return limit + o.wal_ring_bytes + 64 * (1 + o.wal_ring_bytes // (o.wal_file_bytes - 64))


def settled_stats(db, path: str) -> dict:
    """stats() once the WAL writer has written what the ring holds: its WAL byte
    counts must then equal the directory's, shard by shard."""
    deadline = time.monotonic() + 10
    while True:
        st = db.stats()
        disk = wal_on_disk(path)
        if [s["wal_bytes"] for s in st["shards"]] == [disk.get(s["shard"], 0)
                                                       for s in st["shards"]]:
            return st
        assert time.monotonic() < deadline, (st["shards"], disk)
        time.sleep(0.02)


# -- the issue's inputs ----------------------------------------------------------------


def test_sessions_next_to_a_cold_key_keep_the_wal_under_its_bound(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.open(path, **ISSUE) as db:
        bound = testing.options(db).wal_max_bytes
        assert bound == 16 * MiB
        db.put(b"config:x", b"1")     # alone in its leaf: its buffer never fills
        peak = 0
        for i in range(60_000):
            db.put(b"sess:%d" % (i % 5000), b"%05d" % i + bytes(595))
            if i % 1000 == 0:
                peak = max(peak, wal_on_disk(path)[0])
        st = settled_stats(db, path)
        peak = max(peak, st["wal_bytes"])
        # Before the bound: 38.5 MiB, every file since the cold key's write.
        assert peak <= hard_bound(db), (peak, bound)
        assert st["shards"][0]["wal_max_bytes"] == bound
        assert db.get(b"config:x") == b"1"
        for k in range(5000):
            last = 55_000 + k
            assert db.get(b"sess:%d" % k) == b"%05d" % last + bytes(595)


def test_a_counter_updated_in_place_keeps_the_wal_under_its_bound(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.open(path, **ISSUE) as db:
        bound = testing.options(db).wal_max_bytes
        peak = 0
        for i in range(300_000):
            db.incr(b"counter")
            if i % 2000 == 0:
                peak = max(peak, wal_on_disk(path)[0])
        st = settled_stats(db, path)
        peak = max(peak, st["wal_bytes"])
        # Before the bound: 22.9 MiB, the whole log of one 8-byte value.
        assert peak <= hard_bound(db), (peak, bound)
        assert st["merges"] >= 1
        assert db.get(b"counter") == b"300000"


# -- the option ------------------------------------------------------------------------


def test_wal_max_bytes_default_and_validation(tmp_path):
    o = fusedb.options.Options
    assert o().wal_max_bytes == 128 * MiB                          # 4 x the 32 MiB arena
    assert o(**ISSUE).wal_max_bytes == 16 * MiB
    assert o(arena_bytes=4 * MiB).wal_max_bytes == 128 * MiB       # 2 x 64 MiB files
    assert o(wal_max_bytes=64 * MiB).wal_max_bytes == 64 * MiB
    assert o.from_json(o(**ISSUE).to_json()).wal_max_bytes == 16 * MiB
    for bad in (0, -1, 1.5, True, "1", 1000):
        with pytest.raises(fusedb.InvalidArgumentError, match="wal_max_bytes"):
            fusedb.open(str(tmp_path / "db"), wal_max_bytes=bad)
    assert not os.path.exists(tmp_path / "db")


# -- the policy ---------------------------------------------------------------------------

P = Policy(leaf_max_bytes=10**9, hot_fills=3, min_split_entries=10, max_segments=3,
           max_leaves=100, low_free_fraction=0.25, wal_max_bytes=1000)
#: Four files of 400 bytes starting at positions 0, 400, 800, 1200 (the last
#: current): 1600 bytes on disk, 600 over the bound.
FILES = ((0, 400), (400, 400), (800, 400), (1200, 400))


def leaf(i, **kw):
    base = dict(leaf=i, has_frozen=False, active_fill=0.1, has_active=True, nsegs=1,
                seg_bytes=100, seg_entries=50, recent_fills=0, recent_writes=0,
                active_wal_pos=-1)
    base.update(kw)
    return LeafView(**base)


def view(*leaves, files=FILES, free=10):
    return ShardView(tuple(leaves), free, 10, len(leaves), files)


def test_wal_target_frees_the_oldest_files_until_the_rest_fits():
    assert wal_target(FILES, 1000) == 800       # keep 800.. (800 bytes)
    assert wal_target(FILES, 1200) == 400       # keep 400.. (1200 bytes)
    assert wal_target(FILES, 1600) is None      # fits
    assert wal_target(FILES, 100) == 1200       # never past the current file
    assert wal_target(((0, 5000),), 100) is None    # one file: nothing to delete
    assert wal_target(FILES, 0) is None         # no bound


def test_policy_merges_the_buffers_below_the_target_only():
    v = view(leaf(0, active_wal_pos=10),        # cold: pins the oldest file
             leaf(1, active_wal_pos=799),       # pins the second file
             leaf(2, active_wal_pos=800),       # in a file that stays
             leaf(3, has_active=False))         # no buffer
    assert decide(v, P) == [Decision("merge", 0, False, "wal bound"),
                            Decision("merge", 1, False, "wal bound")]
    # Under the bound, or with no bound, nothing.
    assert decide(view(leaf(0, active_wal_pos=10), files=FILES[:2]), P) == []
    no_bound = Policy(**{**P.__dict__, "wal_max_bytes": 0})
    assert decide(v, no_bound) == []


def test_policy_merges_the_active_buffer_after_the_frozen_one():
    # Both buffers of the leaf pin the log: the frozen one is merged first (rule
    # 1), then a second merge freezes and merges the active one.
    v = view(leaf(0, has_frozen=True, active_wal_pos=5))
    assert decide(v, P) == [Decision("merge", 0, False, "frozen buffer"),
                            Decision("merge", 0, False, "wal bound")]
    # A frozen buffer alone is merged once (it is always merged).
    assert decide(view(leaf(0, has_frozen=True, active_wal_pos=900)), P) == [
        Decision("merge", 0, False, "frozen buffer")]


def test_policy_adds_no_merge_for_a_leaf_whose_buffer_another_decision_takes():
    big = leaf(0, seg_bytes=2000, active_wal_pos=5)      # splits: takes its buffer
    p = Policy(**{**P.__dict__, "leaf_max_bytes": 1000})
    assert decide(view(big), p) == [Decision("split", 0, True, "leaf size")]
    cold = leaf(1, active_wal_pos=5)                    # arena pressure takes it
    assert decide(view(cold, free=0), P) == [Decision("merge", 1, False, "arena pressure")]


# -- multiprocess ---------------------------------------------------------------------


def test_multiprocess_bound_and_stats_across_processes(tmp_path):
    """The WAL files are written by the shards' worker processes; this process
    (the router) reads their byte counts from shared memory."""
    path = str(tmp_path / "db")
    opts = dict(ISSUE, shards=2, wal_max_bytes=1 * MiB, wal_file_bytes=128 << 10,
                wal_ring_bytes=2 * MiB)
    with fusedb.open(path, **opts) as db:
        bound = testing.options(db).wal_max_bytes
        db.put(b"x:cold", b"1")            # shard 1, alone
        db.put(b"a:cold", b"1")            # shard 0, next to the counter
        peak = 0
        start = testing.ring_positions(db)["head"]
        while testing.ring_positions(db)["head"] - start < 10 * bound:
            for _ in range(1000):
                db.incr(b"counter")
            peak = max(peak, wal_on_disk(path)[0])
        st = settled_stats(db, path)
        assert peak <= hard_bound(db), (peak, bound)
        assert [s["wal_max_bytes"] for s in st["shards"]] == [bound, bound]
        assert st["shards"][1]["wal_bytes"] < 4096     # two records and a header
        assert st["wal_bytes"] == sum(s["wal_bytes"] for s in st["shards"])
        assert db.get(b"a:cold") == db.get(b"x:cold") == b"1"
        n = db.get(b"counter")
    with fusedb.open(path) as db:
        assert db.get(b"counter") == n


# -- the long test ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["embedded", "multiprocess"])
def test_cold_leaf_and_hot_counter_stay_under_the_bound_over_10x_its_writes(tmp_path, mode):
    """Issue 9: with a cold leaf and a hot counter updated in place, WAL bytes on
    disk stay under their bound over at least 10x that bound of writes.

    The inputs are those the trigger alone was measured with (embedded: a 4 MiB
    bound and the default 4 MiB ring; multiprocess: 1 MiB and 2 MiB); the peak
    must stay under :func:`hard_bound` however slowly the merges run (with the
    trigger alone the embedded peak was 7-14 MiB over the bound under load)."""
    path = str(tmp_path / "db")
    if mode == "embedded":
        bound, extra = 4 * MiB, {}
    else:
        bound, extra = 1 * MiB, {"shards": 1, "wal_ring_bytes": 2 * MiB}
    opts = dict(split_keys=[b"m"], wal_max_bytes=bound, wal_file_bytes=bound // 8, **extra)
    with fusedb.open(path, **opts) as db:
        db.put(b"cold", b"x")               # leaf [.., m): written once
        start = testing.ring_positions(db)["head"]
        peak = rounds = 0
        while testing.ring_positions(db)["head"] - start < 10 * bound:
            for _ in range(1000):
                db.incr(b"n:hits")           # leaf [m, ..): one slot, updated in place
            rounds += 1
            peak = max(peak, wal_on_disk(path)[0])
        st = settled_stats(db, path)
        peak = max(peak, st["wal_bytes"])
        assert peak <= hard_bound(db), (peak, bound)
        assert st["merges"] >= 3       # the bound was reached again and again
        assert db.get(b"n:hits") == b"%d" % (1000 * rounds)
        assert db.get(b"cold") == b"x"


@pytest.mark.parametrize("mode", ["embedded", "multiprocess"])
def test_sync_mode_writers_are_not_deadlocked_by_the_limit(tmp_path, mode):
    """durability="sync": each writer waits for its record to be fsynced. While
    the limit holds writers back the WAL writer still writes and fsyncs what the
    ring holds (only the room for new records is held back), so those waits end;
    the WAL stays under the hard bound over 10 rings of writes."""
    path = str(tmp_path / "db")
    opts = dict(split_keys=[b"m"], wal_max_bytes=64 << 10, wal_file_bytes=16 << 10,
                wal_ring_bytes=64 << 10, max_value_size=4096, durability="sync",
                write_timeout=5.0, **({"shards": 1} if mode == "multiprocess" else {}))
    with fusedb.open(path, **opts) as db:
        db.put(b"cold", b"x")
        start = testing.ring_positions(db)["head"]
        peak = n = 0
        while testing.ring_positions(db)["head"] - start < 10 * (64 << 10):
            for _ in range(100):
                db.incr(b"n:hits")
                n += 1
            peak = max(peak, wal_on_disk(path)[0])
        assert peak <= hard_bound(db), peak
        assert db.get(b"n:hits") == b"%d" % n
    with fusedb.open(path) as db:
        assert db.get(b"n:hits") == b"%d" % n


# -- crash with the bound active ------------------------------------------------------

CHILD = rf"""
import os, sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
import fusedb
from crash_ops import apply, op
from crash_child import OPTIONS
path, mode, seed, start, how = sys.argv[1:6]
db = fusedb.open(path, durability=mode, **OPTIONS, wal_file_bytes=16384,
                 wal_max_bytes=65536, wal_ring_bytes=65536,
                 **({{"shards": 2}} if how == "router" else {{}}))
os.write(1, b"R")
i = int(start)
while True:
    apply(db, op(int(seed), i))
    os.write(1, i.to_bytes(4, "little"))
    i += 1
"""


@pytest.mark.parametrize("how", ["embedded", "router"])
def test_sigkill_with_the_bound_active_loses_nothing_and_replays_little(tmp_path, how):
    """Kill a writer (counters updated in place, puts, deletes, batches) with a
    64 KiB bound (16 KiB files, a 64 KiB ring): after each kill the WAL left on
    disk is under the hard bound (limit 80 KiB, plus one ring, plus 64 bytes per
    file started meanwhile), so the reopen reads at most that plus one ring
    salvaged from shared memory, and the state is exactly the acknowledged one
    (or one more, the operation in flight)."""
    path = str(tmp_path / "db")
    rnd = random.Random(5)
    m: dict = {}
    start = 0
    for _ in range(2):
        p = subprocess.Popen([sys.executable, "-c", CHILD, path, "interval", "3", str(start),
                              how], stdout=subprocess.PIPE)
        try:
            assert p.stdout.read(1) == b"R"
            # Thousands of operations (~100 WAL bytes each): the bound is passed
            # many times over before the kill, which lands at a random moment.
            first = p.stdout.read(4 * rnd.randrange(3000, 6000))
            time.sleep(rnd.uniform(0, 0.05))
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        data = first + p.stdout.read()
        p.stdout.close()
        acked = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data) - 3, 4)]
        assert acked == list(range(start, start + len(acked)))
        last = start + len(acked) - 1
        if how == "router":
            # Its workers notice, flush their rings and exit; wait for them.
            deadline = time.monotonic() + 30
            while any("fusedb.worker.process" in " ".join(c) and path in " ".join(c)
                      for c in _cmdlines()):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        wal = wal_on_disk(path)
        after, in_flight = expect(3, m, start, last)
        with fusedb.open(path) as db:
            got = dict(db.scan())
        m, start = settle(got, after, in_flight, last)
        assert max(wal.values()) <= 65536 + 16384 + 65536 + 64 * (1 + 65536 // (16384 - 64)), wal


def _cmdlines() -> list[list[str]]:
    return [proc.info["cmdline"] or [] for proc in psutil.process_iter(["cmdline"])]


# -- merges that cannot publish: writers held at the limit, never hung -----------------


FULL = [("segment.write", errno.ENOSPC, "in merge"),
        ("wal.before_unlink", errno.EIO, "in WAL truncation")]


@pytest.mark.parametrize("point,no,step", FULL, ids=[p for p, _n, _s in FULL])
def test_merges_that_cannot_publish_hold_writers_at_the_limit_then_let_them_go(
        tmp_path, point, no, step):
    """The disk is full for segments (failpoint "segment.write" raises ENOSPC), so
    no merge publishes and no WAL file can be deleted, while the WAL itself still
    takes writes (or merges publish but deleting WAL files fails with EIO). A hot
    counter is incremented: once its WAL reaches the limit,
    writes wait for ring space and the one that waits ``write_timeout`` gets
    WriteStallError saying why (the WAL limit, merges failing with ENOSPC) — not
    a hang, and not DiskError (the WAL can be written). Reads work; the WAL on
    disk stayed under the hard bound. With the space back, writes go through
    again without a reopen, and every acknowledged increment is there, then and
    after a reopen."""
    path = str(tmp_path / "db")
    opts = dict(split_keys=[b"m"], wal_max_bytes=256 << 10, wal_file_bytes=64 << 10,
                wal_ring_bytes=64 << 10, max_value_size=4096, write_timeout=0.5)
    disk = Disk(no)
    n = 0
    with fusedb.open(path, **opts) as db:
        db.put(b"cold", b"x")
        bound = hard_bound(db)
        peak = 0
        with failpoints.armed(point, disk):
            with pytest.raises(fusedb.WriteStallError) as e:
                # Without back-pressure nothing stops these writes: the loop ends
                # at four times the bound and the test fails.
                while peak <= 4 * bound:
                    t0 = time.monotonic()
                    db.incr(b"n:hits")
                    n += 1
                    if n % 500 == 0:
                        peak = max(peak, wal_on_disk(path)[0])
            waited = time.monotonic() - t0
            assert 0.5 <= waited < 10, waited
            msg = str(e.value)
            assert "reached its limit" in msg and errno.errorcode[no] in msg and step in msg, msg
            assert disk.hits
            assert peak <= bound and wal_on_disk(path)[0] <= bound, (peak, bound)
            assert db.get(b"n:hits") == b"%d" % n     # reads work; the refused write
            assert db.get(b"cold") == b"x"             # was not applied
            assert db.stats()["shards"][0]["wal_bytes"] >= testing.options(db).wal_limit_bytes
            disk.full = False                          # the space is back
        deadline = time.monotonic() + 10
        while True:                                    # merges retry with backoff (<= 1 s)
            try:
                db.incr(b"n:hits")
                n += 1
                break
            except fusedb.WriteStallError:
                assert time.monotonic() < deadline, "writes did not resume"
        for _ in range(20_000):                        # and go on past the limit again
            db.incr(b"n:hits")
            n += 1
        peak = max(peak, wal_on_disk(path)[0])
        assert peak <= bound
        assert db.get(b"n:hits") == b"%d" % n
    with fusedb.open(path, **opts) as db:
        assert db.get(b"n:hits") == b"%d" % n
        assert db.get(b"cold") == b"x"
