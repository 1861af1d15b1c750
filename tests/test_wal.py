"""WAL behaviour inside the engine: replay on open, truncation under a steady
overwrite load, disk errors, and the check/dump tools."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest

import fusedb
from fusedb import testing
from fusedb.core import failpoints
from fusedb.tools.check import check, dump
from fusedb.wal.reader import list_files

from fusedb.testing import TINY, crash


def test_replay_after_crash_with_ring_salvage(tmp_path):
    path = str(tmp_path / "d")
    db = fusedb.open(path, durability="none", **TINY)
    for i in range(300):
        db.put(b"k%03d" % (i % 50), b"v%d" % i)
        db.incr(b"n")
    db.delete(b"k000")
    crash(db)
    assert any("fusedb-" in e for e in os.listdir("/dev/shm")), "the ring outlives the process"
    with fusedb.open(path, **TINY) as db2:
        assert testing.replayed(db2) > 0
        assert db2.get(b"n") == b"300"
        assert db2.get(b"k000") is None, "a deleted key must not resurrect"
        assert db2.get(b"k049") == b"v299"


def test_wal_does_not_grow_under_steady_overwrites(tmp_path):
    path = str(tmp_path / "d")
    with fusedb.open(path, wal_file_bytes=64 * 1024, **TINY) as db:
        for i in range(20_000):
            db.put(b"k%02d" % (i % 40), b"x" * 50)
            if i % 5000 == 4999:
                db.flush()
        db.flush()
        db.put(b"k00", b"y")
        db.flush()
        files = sum(len(v) for v in list_files(path).values())
        assert files <= 3, f"{files} WAL files kept for 40 live keys"
    assert not list_files(path), "a clean close leaves no WAL behind"


@pytest.mark.parametrize("point", ["wal.write", "wal.fsync"])
def test_disk_full_surfaces_to_writers_and_loses_nothing(tmp_path, point):
    path = str(tmp_path / "d")

    def enospc():
        raise OSError(errno.ENOSPC, "No space left on device (injected)")

    db = fusedb.open(path, durability="sync", wal_ring_bytes=64 * 1024, write_timeout=2.0,
                     **{k: v for k, v in TINY.items() if k != "write_timeout"})
    try:
        db.put(b"before", b"1")
        with failpoints.armed(point, enospc):
            with pytest.raises(fusedb.DiskError):
                db.put(b"during", b"2")
            assert db.get(b"before") == b"1", "reads still work"
        db.put(b"after", b"3")
    finally:
        db.close()
    with fusedb.open(path) as db:
        assert db.get(b"before") == b"1" and db.get(b"after") == b"3"


def test_check_and_dump(tmp_path):
    path = str(tmp_path / "d")
    db = fusedb.open(path, **TINY)
    for i in range(200):
        db.put(b"k%03d" % i, b"v" * 30)
    db.incr(b"n", 7)
    crash(db)   # leaves WAL records and segments
    from fusedb.wal.recovery import salvage
    from fusedb.shm import region
    salvage(region.tag_for(path), path)
    region.remove_leftovers(region.tag_for(path))
    assert check(path) == []
    text = "\n".join(dump(path))
    assert "b'n'" in text and "int 7" in text and "MANIFEST" in text
    out = subprocess.run([sys.executable, "-m", "fusedb", "check", path], capture_output=True)
    assert out.returncode == 0 and b"ok" in out.stdout
    wal = list_files(path)[0][-1][1]
    with open(wal, "r+b") as f:      # damage the first record, with more records after it
        f.seek(64 + 20)
        f.write(b"\xff\xff")
    problems = check(path)
    assert any("WAL record damaged" in p and "offset 64" in p for p in problems), problems
    out = subprocess.run([sys.executable, "-m", "fusedb", "check", path], capture_output=True)
    assert out.returncode == 1
    with pytest.raises(fusedb.CorruptionError) as e:
        fusedb.open(path)
    assert e.value.path == wal and e.value.offset == 64


def test_check_accepts_a_wal_only_database_and_refuses_an_empty_directory(tmp_path):
    """A database that crashed before its first manifest is its WAL alone."""
    path = str(tmp_path / "d")
    db = fusedb.open(path, **TINY)
    db.put(b"a", b"1")
    crash(db)
    from fusedb.shm import region
    from fusedb.wal.recovery import salvage
    salvage(region.tag_for(path), path)
    region.remove_leftovers(region.tag_for(path))
    assert not os.path.exists(os.path.join(path, "MANIFEST"))
    assert check(path) == []
    os.makedirs(tmp_path / "empty")
    assert ["no MANIFEST and no WAL" in p for p in check(str(tmp_path / "empty"))] == [True]


def test_interval_mode_fsyncs_on_its_own(tmp_path):
    """In interval mode the WAL becomes durable without any further write or call:
    the WAL writer fsyncs within sync_interval (checked with a generous bound)."""
    with fusedb.open(str(tmp_path / "d"), durability="interval", sync_interval=0.05) as db:
        db.put(b"k", b"v")
        target = testing.ring_positions(db)["head"]
        deadline = time.monotonic() + 5
        while testing.ring_positions(db)["durable"] < target and time.monotonic() < deadline:
            time.sleep(0.01)
        assert testing.ring_positions(db)["durable"] >= target


def test_none_mode_does_not_fsync_each_write(tmp_path):
    with fusedb.open(str(tmp_path / "d"), durability="none") as db:
        for i in range(100):
            db.put(b"k%d" % i, b"v")
        deadline = time.monotonic() + 5
        while (pos := testing.ring_positions(db))["written"] < pos["head"] and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        pos = testing.ring_positions(db)
        assert pos["written"] == pos["head"], "written to the file"
        assert pos["durable"] == 0, "but never fsynced"
