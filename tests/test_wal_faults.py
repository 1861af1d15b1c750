"""Disk faults in the WAL path, injected into the WAL writer's own ``os`` (as a full
disk would behave), with the regressions a review found: a short write then
ENOSPC must not misalign the log; a close that meets the error must keep the
ring for the next open; a transient error must not take the database down."""

from __future__ import annotations

import errno
import os
import types

import pytest

import fusedb
import fusedb.wal.writer as writer
from fusedb.tools.check import check

from fusedb.testing import TINY


class FlakyDisk:
    """Stands in for ``os`` in fusedb.wal.writer: while ``full``, a write stores
    half its bytes and raises ENOSPC (a short write, then the error)."""

    def __init__(self):
        self.full = False
        self.proxy = types.SimpleNamespace(**{n: getattr(os, n) for n in dir(os)
                                               if not n.startswith("__")})
        self.proxy.write = self.write

    def write(self, fd, data):
        if self.full:
            half = len(data) // 2
            if half:
                os.write(fd, bytes(data[:half]))
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return os.write(fd, data)


@pytest.fixture
def disk():
    d = FlakyDisk()
    writer.os = d.proxy
    yield d
    writer.os = os


def test_short_write_then_recovery_keeps_the_log_aligned(tmp_path, disk):
    path = str(tmp_path / "d")
    db = fusedb.open(path, durability="sync", write_timeout=1.0,
                     **{k: v for k, v in TINY.items() if k != "write_timeout"})
    try:
        db.put(b"before", b"1")
        disk.full = True
        with pytest.raises(fusedb.DiskError):
            db.put(b"during", b"2")
        assert db.get(b"before") == b"1", "reads keep working"
        disk.full = False
        for i in range(20):
            db.put(b"after%02d" % i, b"x")     # acknowledged after the disk recovered
        from fusedb.testing import crash
        crash(db)
    finally:
        disk.full = False
    assert check(path) == [], "the log is whole and aligned after the retry"
    with fusedb.open(path, **TINY) as db:
        assert db.get(b"before") == b"1"
        assert all(db.get(b"after%02d" % i) == b"x" for i in range(20))


def test_close_during_a_disk_error_keeps_the_ring(tmp_path, disk):
    path = str(tmp_path / "d")
    db = fusedb.open(path, durability="interval", **TINY)
    db.put(b"before", b"1")
    db.flush()
    disk.full = True
    db.put(b"acked", b"2")
    with pytest.raises(fusedb.DiskError):
        db.close()
    disk.full = False
    from fusedb.shm import region
    assert any("wal" in nm for _k, nm in region.leftovers(region.tag_for(path))), \
        "the ring stays for salvage"
    with fusedb.open(path, **TINY) as db:      # salvages the ring, then cleans up
        assert db.get(b"acked") == b"2"
        assert db.get(b"before") == b"1"


def test_transient_error_during_merges_does_not_fail_the_database(tmp_path, disk):
    path = str(tmp_path / "d")
    with fusedb.open(path, durability="none", **TINY) as db:
        for i in range(50):
            db.put(b"k%03d" % i, b"v" * 40)
        disk.full = True
        for i in range(50, 60):
            db.put(b"k%03d" % i, b"v" * 40)     # ring has room: acknowledged
        import time
        time.sleep(0.2)                         # merges and flushes meet the error
        assert db.get(b"k001") == b"v" * 40
        disk.full = False
        db.flush()
        assert db.get(b"k059") == b"v" * 40
        db.put(b"later", b"ok")
    with fusedb.open(path, **TINY) as db:
        assert db.get(b"k059") == b"v" * 40 and db.get(b"later") == b"ok"
