"""Engine behaviour: merges never block writers, bounded back-pressure, splits
publish atomically, scans stay ordered under concurrent splits."""

from __future__ import annotations

import errno
import threading
import time

import pytest

import fusedb
from fusedb import testing
from fusedb.core import failpoints

from fusedb.testing import TINY


def test_puts_do_not_wait_for_a_merge_held_open(tmp_path):
    """A merge held artificially long (at its publish step) does not block puts,
    gets or incrs: they keep flowing into the active buffer."""
    held = threading.Event()
    release = threading.Event()

    def hold():
        held.set()
        release.wait(30)

    opts = dict(TINY, buffer_slots=64, buffer_bytes=16384, arena_bytes=16384 * 16)
    db = fusedb.open(str(tmp_path / "d"), **opts)
    try:
        with failpoints.armed("merge.before_publish", hold):
            i = 0
            while db.stats()["buffer_freezes"] == 0:   # fill the buffer until it freezes
                db.put(b"k%05d" % i, b"x" * 20)
                i += 1
                assert i < 10_000, "no buffer froze"
            assert held.wait(20), "the merge did not start"
            # The merge now sits in the failpoint. Writes must still complete.
            done = threading.Event()
            errors = []

            def writer():
                try:
                    for j in range(40):
                        db.put(b"k%05d" % j, b"new")
                        db.incr(b"counter")
                        assert db.get(b"k%05d" % j) == b"new"
                    done.set()
                except BaseException as e:  # reported below
                    errors.append(e)

            t = threading.Thread(target=writer)
            t.start()
            t.join(20)
            merge_still_held = not release.is_set()
            release.set()
            assert not errors, errors
            assert done.is_set(), "writes blocked behind the held merge"
            assert merge_still_held
        db.flush()
        assert db.get(b"counter") == b"40"
        assert db.get(b"k00000") == b"new"
    finally:
        release.set()
        db.close()


def test_back_pressure_is_bounded_and_recovers(tmp_path):
    """With merges stalled and the arena exhausted, a writer waits at most
    write_timeout and gets WriteStallError (its write not applied); once merges
    resume, writes succeed and nothing acknowledged is lost."""
    release = threading.Event()
    opts = dict(TINY, write_timeout=0.5, arena_bytes=4096 * 4)
    db = fusedb.open(str(tmp_path / "d"), **opts)
    try:
        acked = {}
        with failpoints.armed("merge.before_publish", lambda: release.wait(30)):
            with pytest.raises(fusedb.WriteStallError):
                for i in range(10_000):
                    k = b"key%05d" % i
                    db.put(k, b"v%d" % i)
                    acked[k] = b"v%d" % i
            stalled_key = b"key%05d" % len(acked)
            t0 = time.monotonic()
            with pytest.raises(fusedb.WriteStallError):
                db.put(b"one-more", b"x")
            assert time.monotonic() - t0 < 5
            release.set()
        db.put(b"after", b"ok")
        assert db.get(stalled_key) is None, "the stalled write was not applied"
        assert db.get(b"one-more") is None
        assert db.stats()["write_stalls"] >= 2
        for k, v in acked.items():
            assert db.get(k) == v
    finally:
        release.set()
        db.close()
    with fusedb.open(str(tmp_path / "d"), **opts) as db:
        for k, v in acked.items():
            assert db.get(k) == v
        assert db.get(b"after") == b"ok"


def test_arena_pressure_merges_cold_leaves(tmp_path):
    """Many leaves each holding a small active buffer: the scheduler merges the
    cold ones to give slabs back, so writers never stall."""
    opts = dict(TINY, arena_bytes=4096 * 8, write_timeout=20.0)
    with fusedb.open(str(tmp_path / "d"), **opts) as db:
        for i in range(2000):
            db.put(b"%04d" % (i * 7 % 2000), b"v" * 30)
        s = db.stats()
        assert s["leaves"] > 8, "more leaves than slabs"
        assert s["arena_slabs_used"] <= 8
        assert s["write_stalls"] == 0
        assert len(list(db.scan())) == 2000


def test_split_during_scan_neither_repeats_nor_skips(tmp_path):
    opts = dict(TINY, buffer_slots=8)
    with fusedb.open(str(tmp_path / "d"), **opts) as db:
        stable = {b"s%04d" % i: b"stable" for i in range(0, 600, 3)}
        for k, v in stable.items():
            db.put(k, v)
        stop = threading.Event()
        errors = []

        def churn():
            i = 0
            try:
                while not stop.is_set():
                    db.put(b"s%04d" % (i % 600 * 3 + 1), b"x" * (i % 60))
                    i += 1
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=churn)
        t.start()
        try:
            splits_before = db.stats()["splits"]
            deadline = time.monotonic() + 30
            rounds = 0
            # Scan until splits happened during the scans (at least 15 rounds).
            while rounds < 15 or (db.stats()["splits"] == splits_before
                                  and time.monotonic() < deadline):
                for reverse in (False, True):
                    keys = [k for k, _ in db.scan(b"s", b"t", reverse=reverse)]
                    assert keys == sorted(set(keys), reverse=reverse), "ordered, no repeats"
                    assert stable.keys() <= set(keys), "a stable key was skipped"
                rounds += 1
        finally:
            stop.set()
            t.join()
        assert not errors
        assert db.stats()["splits"] > splits_before, "no split happened while scanning"


def test_reopen_with_different_shard_count(tmp_path):
    path = str(tmp_path / "d")
    with fusedb.open(path, shards=3, **{k: v for k, v in TINY.items() if k != "shards"}) as db:
        for i in range(500):
            db.put(bytes([i % 256]) + b"k%d" % i, b"%d" % i)
        assert db.stats()["shards"][2]["slabs_free"] >= 0
    with fusedb.open(path, shards=2, **TINY) as db:
        assert len(list(db.scan())) == 500
        assert db.get(bytes([7]) + b"k7") == b"7"


def test_incr_from_many_threads_is_atomic(tiny):
    def work():
        for _ in range(500):
            tiny.incr(b"c")
            tiny.incr(b"c%d" % threading.get_ident())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tiny.get(b"c") == b"2000"


@pytest.mark.parametrize("point, error", [
    ("merge.before_publish", RuntimeError("a bug (injected)")),
    ("merge.before_publish", OSError(errno.EROFS, "Read-only file system (injected)")),
    ("manifest.write", PermissionError(errno.EACCES, "Permission denied (injected)")),
], ids=["bug", "EROFS", "EACCES-manifest"])
def test_worker_failure_is_reported_not_swallowed(tmp_path, point, error):
    """A failure that is not a transient disk error (a bug; a file system gone
    read-only; a permission taken away) fails the database loudly. Transient
    disk errors are retried instead: tests/test_disk_faults.py."""
    def boom():
        raise error

    db = fusedb.open(str(tmp_path / "d"), **TINY)
    with failpoints.armed(point, boom):
        with pytest.raises(fusedb.FuseDBError, match="background merge worker failed"):
            for i in range(10_000):
                db.put(b"k%05d" % i, b"v" * 50)
    with pytest.raises(fusedb.FuseDBError):
        db.get(b"k00000")
    with pytest.raises(fusedb.FuseDBError):
        db.close()
    assert db.closed


def _db_without_worker(tmp_path):
    """A database whose merge worker is stopped: the test merges and splits
    by hand (the worker must be the only one doing it)."""
    db = fusedb.open(str(tmp_path / "db"), **dict(TINY, leaf_max_bytes=1 << 20, hot_fills=1000))
    testing.stop_worker(db, 0)
    return db


def _leaf_state(db, key):
    leaf = testing.leaf_of(db, key)
    return leaf, testing.segments_of(db, leaf)


def test_append_split_keeps_the_segments_and_rewrites_nothing(tmp_path):
    """A split whose frozen buffer holds only keys above every key of the leaf's
    segments (a sequential load) keeps those segments, unchanged, as the left
    leaf, and makes the buffer alone the right leaf."""
    db = _db_without_worker(tmp_path)
    try:
        for i in range(10):
            db.put(b"k%04d" % i, b"x" * 20)
        testing.merge_leaf(db, testing.leaf_of(db, b"k0000"), full=False)
        leaf, segs = _leaf_state(db, b"k0000")
        assert segs
        written = db.stats()["segment_bytes_written"]
        for i in range(10, 14):        # above every key in the segments
            db.put(b"k%04d" % i, b"y" * 20)
        assert testing.merge_leaf(db, leaf, full=False, split=True)
        left, left_segs = _leaf_state(db, b"k0000")
        right, right_segs = _leaf_state(db, b"k0010")
        assert left == leaf and left_segs == segs       # not rewritten
        assert right != leaf and len(right_segs) == 1
        assert _leaf_state(db, b"k0009")[0] == leaf
        seg = testing.open_segment(db, right_segs[0])
        assert [seg.key(j) for j in range(seg.count)] == [b"k%04d" % i for i in range(10, 14)]
        # only the buffer was written
        assert db.stats()["segment_bytes_written"] - written == seg.size
        assert [db.get(b"k%04d" % i) for i in range(14)] == [b"x" * 20] * 10 + [b"y" * 20] * 4
    finally:
        db.close()


def test_split_with_keys_below_the_segments_rewrites_both_halves(tmp_path):
    """Not an append (a buffered key falls inside the segments' range): the
    ordinary split, at the middle of the merged bytes."""
    db = _db_without_worker(tmp_path)
    try:
        for i in range(0, 20, 2):
            db.put(b"k%04d" % i, b"x" * 20)
        testing.merge_leaf(db, testing.leaf_of(db, b"k0000"), full=False)
        leaf, segs = _leaf_state(db, b"k0000")
        db.put(b"k0005", b"y" * 20)
        db.put(b"k0030", b"y" * 20)
        assert testing.merge_leaf(db, leaf, full=False, split=True)
        left, left_segs = _leaf_state(db, b"k0000")
        assert left == leaf and left_segs != segs
        right = _leaf_state(db, b"k0030")[0]
        assert right != leaf and _leaf_state(db, b"k0012")[0] in (leaf, right)
        assert db.get(b"k0005") == b"y" * 20 and db.get(b"k0004") == b"x" * 20
    finally:
        db.close()


def test_append_split_never_drops_a_tombstone_that_shadows_the_segments(tmp_path):
    """Found by the state machine: a buffer holding a tombstone for a key in the
    segments plus keys above them is not an append; the delete survives."""
    db = _db_without_worker(tmp_path)
    try:
        for i in range(10):
            db.put(b"k%04d" % i, b"x" * 20)
        leaf = testing.leaf_of(db, b"k0000")
        testing.merge_leaf(db, leaf, full=False)
        db.delete(b"k0005")
        db.put(b"k0050", b"y")
        testing.merge_leaf(db, leaf, full=False, split=True)
        assert db.get(b"k0005") is None
        assert sorted(k for k, _ in db.scan()) == [b"k%04d" % i for i in range(10) if i != 5] + \
            [b"k0050"]
        # an append whose buffered entries are all dead leaves an empty right leaf
        db.delete(b"k0050")
        db.put(b"k0060", b"z")
        db.delete(b"k0060")
        testing.merge_leaf(db, testing.leaf_of(db, b"k0060"), full=False, split=True)
        assert db.get(b"k0060") is None and db.get(b"k0050") is None
    finally:
        db.close()
