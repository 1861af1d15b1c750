"""Disk faults in the background I/O paths (issue 9, item 2): a full disk (ENOSPC),
an exceeded quota (EDQUOT) or an I/O error (EIO) in a merge, a split, a manifest
write, a WAL rotation, a WAL truncation, a segment deletion, a shard repair, or
the creation of shared memory at open; then the space comes back.

What must hold, in embedded and multiprocess mode: reads work throughout;
writers see DiskError only when the WAL cannot take their write, and
WriteStallError (naming the cause) when buffer memory runs out because merges
cannot run; the database heals by itself within about a second of the disk
recovering, without a reopen; nothing acknowledged is lost; a failed attempt
leaves no file behind; one log line per failure and per recovery, no
traceback, no worker process dying; stats() shows the state. An error that is
not a transient disk error still fails the database loudly.

Failpoints (fusedb/core/failpoints.py) inject the errors without root; two tests
also fill a real 2 MiB tmpfs (they need root to mount it, and skip otherwise).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import fusedb
from fusedb import testing
from fusedb.core import failpoints
from fusedb.shm import region

from fault_helpers import Disk
from fusedb.testing import TINY, crash
from mp_helpers import Client

#: Small files so that rotation, truncation, merges and splits all happen within
#: a few hundred writes; a short write_timeout so a stall is quick to see.
OPTS = dict(TINY, wal_file_bytes=4096, write_timeout=1.0)


def key(i: int) -> bytes:
    """Keys of both halves of the key space (the two shards of a 2-shard
    database); enough of them that buffers fill and merges run."""
    return bytes([1 + (i % 2) * 0x80]) + b"k%03d" % (i % 600)


def workers(db) -> list[dict]:
    return db.stats()["workers"]


def wait_until(cond, limit: float, what: str):
    deadline = time.monotonic() + limit
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} not within {limit}s"
        time.sleep(0.01)


def wait_healed(db, limit: float = 5.0) -> None:
    """The database heals by itself (no reopen) within ``limit`` seconds."""
    wait_until(lambda: all(w["background_error"] is None for w in workers(db)), limit,
               "healed: " + repr(workers(db)))


def assert_no_garbage(db) -> None:
    """No temporary file is left, and every segment file on disk is live."""
    names = os.listdir(db.path)
    assert not [n for n in names if n.endswith(".tmp")], names
    on_disk = {int(n[4:-5], 16) for n in names if n.startswith("seg-") and n.endswith(".fseg")}
    assert on_disk == testing.live_segments(db)


def write_while(db, model: dict, start: int, until, limit: float = 10.0) -> int:
    """Write (and read back) until ``until()``; returns the next write number.
    A write refused with WriteStallError (merges cannot free buffer memory) was
    not applied: writing stops there."""
    deadline = time.monotonic() + limit
    i = start
    while not until() and time.monotonic() < deadline:
        k, v = key(i), b"w%d" % i
        try:
            db.put(k, v)
        except fusedb.WriteStallError as e:
            assert "merges cannot run" in str(e), str(e)
            time.sleep(0.05)
            continue
        model[k] = v
        probe = key(i * 7)
        assert db.get(probe) == model.get(probe), "reads work while the disk fails"
        i += 1
    return i


# -- embedded: every background step, with the fault injected -------------------------------

POINTS = [
    # (failpoint, the step it fails (as stats() and the log name it), errno)
    ("segment.write", ("merge", "split"), errno.ENOSPC),
    ("segment.write", ("merge", "split"), errno.EIO),
    ("segment.write", ("merge", "split"), errno.EDQUOT),
    ("split.before_publish", ("split",), errno.ENOSPC),
    ("split.before_publish", ("split",), errno.EIO),
    ("manifest.write", ("manifest write",), errno.ENOSPC),
    ("manifest.write", ("manifest write",), errno.EIO),
    ("wal.rotate", ("WAL rotation",), errno.ENOSPC),
    ("wal.rotate", ("WAL rotation",), errno.EIO),
    ("wal.before_unlink", ("WAL truncation",), errno.EIO),
    ("segment.before_unlink", ("segment deletion",), errno.EIO),
    ("wal.write", ("WAL write", "merge"), errno.ENOSPC),
]


@pytest.mark.parametrize("point,steps,no", POINTS,
                         ids=[f"{p}-{errno.errorcode[n]}" for p, _s, n in POINTS])
def test_background_disk_error_is_retried_and_heals(tmp_path, caplog, point, steps, no):
    caplog.set_level(logging.INFO, logger="fusedb")
    path = str(tmp_path / "db")
    disk = Disk(no)
    model: dict = {}
    with fusedb.open(path, **OPTS) as db:
        for i in range(300):
            db.put(key(i), b"v%d" % i)
            model[key(i)] = b"v%d" % i
        with failpoints.armed(point, disk):
            i = write_while(db, model, 300, lambda: disk.hits >= 3)
            assert disk.hits, f"{point} was never reached"
            assert dict(db.scan()) == model, "scans work while the disk fails"
            row = workers(db)[0]
            assert row["background_error"] is not None, row
            assert errno.errorcode[no] in row["background_error"], row
            assert any(f"in {s}" in row["background_error"] for s in steps), row
            disk.full = False                       # the space is back
            wait_healed(db)
        row = workers(db)[0]
        assert row["background_failures"] >= 1 and errno.errorcode[no] in \
            row["last_background_error"], row
        for j in range(i, i + 50):                  # writes go on
            db.put(key(j), b"after%d" % j)
            model[key(j)] = b"after%d" % j
        db.flush()
        assert dict(db.scan()) == model
        assert_no_garbage(db)
    with fusedb.open(path, **OPTS) as db:           # and it was all made durable
        assert dict(db.scan()) == model
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings and len(warnings) <= 3, [r.getMessage() for r in warnings]
    assert all(r.exc_info is None and "failed" in r.getMessage() for r in warnings)
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_writers_stall_naming_the_cause_then_go_on(tmp_path):
    """Merges cannot write their segments: writes go on while buffer memory lasts,
    then wait write_timeout and get WriteStallError naming the disk error (not
    applied); reads work; once the space is back writes succeed again."""
    disk = Disk(errno.ENOSPC)
    model = {}
    with fusedb.open(str(tmp_path / "db"), **dict(OPTS, write_timeout=0.5)) as db:
        with failpoints.armed("segment.write", disk):
            with pytest.raises(fusedb.WriteStallError) as e:
                for i in range(5000):
                    db.put(b"k%04d" % i, b"v" * 40)
                    model[b"k%04d" % i] = b"v" * 40
            assert "ENOSPC" in str(e.value) and "merge" in str(e.value)
            assert disk.hits and len(model) > 16, "writes went on while buffers lasted"
            assert db.get(b"k%04d" % len(model)) is None, "the refused write was not applied"
            assert dict(db.scan()) == model
            assert db.stats()["write_stalls"] >= 1
            disk.full = False
        wait_healed(db)
        db.put(b"after", b"1")
        model[b"after"] = b"1"
        assert dict(db.scan()) == model


def test_flush_raises_disk_error_then_works(tmp_path):
    disk = Disk(errno.EIO)
    with fusedb.open(str(tmp_path / "db"), **OPTS) as db:
        db.put(b"a", b"1")
        with failpoints.armed("segment.write", disk):
            with pytest.raises(fusedb.DiskError, match="EIO|Input/output error"):
                db.flush()
            assert db.get(b"a") == b"1"
            disk.full = False
            db.flush()
        assert db.stats()["segments"] >= 1 and db.get(b"a") == b"1"


def test_close_on_a_full_disk_raises_disk_error_and_loses_nothing(tmp_path):
    path = str(tmp_path / "db")
    disk = Disk(errno.ENOSPC)
    db = fusedb.open(path, **OPTS)
    model = {}
    for i in range(100):
        db.put(key(i), b"v%d" % i)
        model[key(i)] = b"v%d" % i
    with failpoints.armed("segment.write", disk):
        with pytest.raises(fusedb.DiskError, match="nothing is lost"):
            db.close()
    assert db.closed
    with fusedb.open(path, **OPTS) as db:
        assert dict(db.scan()) == model


def test_split_retries_use_no_leaf_ids(tmp_path):
    """Each failed split attempt used to take a new leaf id: a long disk-full
    period would use up max_leaves."""
    disk = Disk(errno.ENOSPC)
    with fusedb.open(str(tmp_path / "db"), **OPTS) as db:
        with failpoints.armed("split.before_publish", disk):
            for i in range(5000):
                if disk.hits:
                    break
                try:
                    db.put(b"k%04d" % i, b"v" * 40)
                except fusedb.WriteStallError:
                    break   # merges that split cannot run: buffer memory ran out
            assert disk.hits
            # (splits before the first failure each took an id of their own)
            taken = testing.next_leaf_id(db)
            wait_until(lambda: disk.hits >= 6, 10, "six split attempts")
            assert testing.next_leaf_id(db) == taken, "failed attempts took leaf ids"
            disk.full = False
        wait_healed(db)
        # The retried split used the id the first attempt took.
        assert taken - 1 in testing.leaves(db)


# -- shared memory at open ----------------------------------------------------------------------


@pytest.mark.parametrize("mode,nth", [("embedded", 0), ("embedded", 1), ("embedded", 2),
                                      ("multiprocess", 1)],
                         ids=["embedded-meta", "embedded-arena0", "embedded-wal0",
                              "multiprocess-arena0"])
def test_shared_memory_creation_fault_at_open(tmp_path, mode, nth):
    """open() fails cleanly (nothing left in /dev/shm, the directory unlocked,
    nothing lost), and the next open works. Embedded: after a crash, so the
    failing open has salvaged the rings and replayed the WAL first."""
    path = str(tmp_path / "db")
    kw = dict(TINY, shards=2) if mode == "multiprocess" else dict(TINY)
    model = {key(i): b"v%d" % i for i in range(200)}
    db = fusedb.open(path, **kw)
    for k, v in model.items():
        db.put(k, v)
    if mode == "embedded":
        crash(db)
    else:
        db.close()
    calls = []

    def fail_nth() -> None:
        calls.append(1)
        if len(calls) == nth + 1:
            raise OSError(errno.ENOSPC if nth != 1 else errno.EIO, "injected")

    with failpoints.armed("shm.create", fail_nth):
        with pytest.raises((OSError, fusedb.FuseDBError)):
            fusedb.open(path, **kw)
    assert not region.leftovers(region.tag_for(path)), "a failed open left shared memory"
    with fusedb.open(path, **kw) as db:
        assert dict(db.scan()) == model


# -- multiprocess: the worker processes ----------------------------------------------------------

MP_POINTS = [("segment.write", "ENOSPC"), ("split.before_publish", "EIO"),
             ("manifest.write", "EDQUOT"), ("wal.rotate", "ENOSPC"),
             ("wal.before_unlink", "EIO")]


@pytest.mark.parametrize("point,name", MP_POINTS, ids=[f"{p}-{n}" for p, n in MP_POINTS])
def test_worker_processes_retry_and_heal(tmp_path, monkeypatch, capfd, point, name):
    """The fault is armed in both worker processes (it fires while a marker file
    exists). The workers do not die or print a traceback; an attached client
    reads and writes throughout; removing the marker heals the database."""
    path = str(tmp_path / "db")
    marker = str(tmp_path / "disk-full")
    monkeypatch.setenv("FUSEDB_WORKER_FAILPOINTS", f"{point}=oserror:{name}:{marker}")
    model: dict = {}
    with fusedb.open(path, **dict(OPTS, shards=2, lock_timeout=5.0)) as db:
        pids = [w["pid"] for w in workers(db)]
        for i in range(300):
            db.put(key(i), b"v%d" % i)
            model[key(i)] = b"v%d" % i
        client = Client(path)
        try:
            open(marker, "w").close()
            i = write_while(db, model, 300,
                            lambda: any(w["background_error"] for w in workers(db)))
            row = next(w for w in workers(db) if w["background_error"])
            assert name in row["background_error"], row
            client("put", b"\x01client", b"c")      # an attached process writes...
            model[b"\x01client"] = b"c"
            assert client("get", key(5)) == model[key(5)]   # ... and reads
            assert client("scan") == model
            os.unlink(marker)                       # the space is back
            wait_healed(db)
            client("put", b"\x81client", b"d")
            model[b"\x81client"] = b"d"
            for j in range(i, i + 50):
                db.put(key(j), b"after%d" % j)
                model[key(j)] = b"after%d" % j
            db.flush()
            assert dict(db.scan()) == model
            assert_no_garbage(db)
            assert [w["pid"] for w in workers(db)] == pids, "a worker process died"
        finally:
            client.close()
    with fusedb.open(path, **OPTS) as db:
        assert dict(db.scan()) == model
    err = capfd.readouterr().err
    assert "Traceback" not in err and "restarting" not in err, err
    assert "failed: [Errno" in err and "works again" in err, err


def test_flush_from_a_multiprocess_handle_raises_disk_error(tmp_path, monkeypatch):
    path = str(tmp_path / "db")
    marker = str(tmp_path / "disk-full")
    monkeypatch.setenv("FUSEDB_WORKER_FAILPOINTS", f"segment.write=oserror:ENOSPC:{marker}")
    with fusedb.open(path, **dict(OPTS, shards=2)) as db:
        db.put(b"\x01a", b"1")
        open(marker, "w").close()
        with pytest.raises(fusedb.DiskError, match="ENOSPC"):
            db.flush()
        os.unlink(marker)
        wait_healed(db)
        db.flush()
        assert db.get(b"\x01a") == b"1"


def test_repair_on_a_full_disk_waits_for_space(tmp_path, monkeypatch, capfd):
    """A client dies holding a shard lock while the disk is full: the shard's
    worker keeps the lock and retries the repair with backoff (it used to exit
    and be restarted over and over, printing tracebacks); once the space is back
    the repair completes, in the same worker process, and nothing is lost."""
    path = str(tmp_path / "db")
    marker = str(tmp_path / "disk-full")
    monkeypatch.setenv("FUSEDB_WORKER_FAILPOINTS", f"segment.write=oserror:ENOSPC:{marker}")
    model = {}
    with fusedb.open(path, **dict(TINY, shards=2, lock_timeout=5.0)) as db:
        for i in range(100):
            db.put(key(i), b"v%d" % i)
            model[key(i)] = b"v%d" % i
        db.flush()
        for i in range(100, 110):                  # in buffers and the WAL only
            db.put(key(i), b"v%d" % i)
            model[key(i)] = b"v%d" % i
        pids = [w["pid"] for w in workers(db)]
        open(marker, "w").close()
        client = Client(path)
        assert client("hold_lock", 0) == "held"
        client.proc.kill()
        client.proc.join()
        wait_until(lambda: testing.background_state(db, 0)["background_error"], 5,
                   "the repair failing")
        assert "shard repair" in testing.background_state(db, 0)["background_error"]
        assert db.get(b"\x81k001") == model[b"\x81k001"], "the other shard serves reads"
        time.sleep(0.3)
        os.unlink(marker)
        assert db.get(key(104)) == model[key(104)]  # waits for the repair, then reads
        assert dict(db.scan()) == model
        assert [w["pid"] for w in workers(db)] == pids
        assert workers(db)[0]["repairs"] == 1
    with fusedb.open(path, **TINY) as db:
        assert dict(db.scan()) == model
    err = capfd.readouterr().err
    assert "Traceback" not in err and "restarting" not in err, err


# -- a real full file system -------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs mounted for the test (root only: skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"mount not permitted: {r.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode:
            subprocess.run(["umount", "-l", str(mnt)])


def fill(directory: str) -> str:
    """Fill the file system of ``directory`` to the last byte; return the file."""
    p = os.path.join(directory, "filler")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (1 << 16, 4096, 512):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return p


FS_OPTS = dict(TINY, wal_file_bytes=32 << 10, wal_ring_bytes=32 << 10, write_timeout=1.0)


def fill_then_refuse(db, model: dict, directory: str):
    """Fill the file system, then write until the database refuses a write;
    returns (the filler file, the refusal)."""
    filler = fill(directory)
    for i in range(100_000):
        k, v = key(i) + b"%d" % (i % 7), b"v%d" % i * 8
        try:
            db.put(k, v)
        except (fusedb.DiskError, fusedb.WriteStallError) as e:
            return filler, e
        model[k] = v
    raise AssertionError("the database never refused a write on a full file system")


def test_full_filesystem_heals_embedded(small_fs):
    path = os.path.join(small_fs, "db")
    model: dict = {}
    with fusedb.open(path, **FS_OPTS) as db:
        for i in range(200):
            db.put(key(i), b"before%d" % i)
            model[key(i)] = b"before%d" % i
        filler, refused = fill_then_refuse(db, model, small_fs)
        assert "No space left on device" in str(refused), refused
        assert dict(db.scan()) == model, "reads work on the full file system"
        assert workers(db)[0]["background_error"] is not None
        os.unlink(filler)
        wait_healed(db, 10)
        db.put(b"after", b"1")
        model[b"after"] = b"1"
        db.flush()
        assert dict(db.scan()) == model
        assert_no_garbage(db)
    with fusedb.open(path, **FS_OPTS) as db:
        assert dict(db.scan()) == model
    assert not region.leftovers(region.tag_for(path))


def test_full_filesystem_heals_multiprocess(small_fs, capfd):
    path = os.path.join(small_fs, "db")
    model: dict = {}
    with fusedb.open(path, **dict(FS_OPTS, shards=2, lock_timeout=5.0)) as db:
        for i in range(200):
            db.put(key(i), b"before%d" % i)
            model[key(i)] = b"before%d" % i
        pids = [w["pid"] for w in workers(db)]
        client = Client(path)
        try:
            filler, refused = fill_then_refuse(db, model, small_fs)
            assert "No space left on device" in str(refused), refused
            assert client("scan") == model, "an attached process reads the full database"
            assert dict(db.scan()) == model
            os.unlink(filler)
            wait_healed(db, 10)
            client("put", b"\x81after", b"2")
            model[b"\x81after"] = b"2"
            db.flush()
            assert dict(db.scan()) == model
            assert_no_garbage(db)
            assert [w["pid"] for w in workers(db)] == pids, "a worker process died"
            assert all(psutil.pid_exists(p) for p in pids)
        finally:
            client.close()
    with fusedb.open(path, **FS_OPTS) as db:
        assert dict(db.scan()) == model
    assert not region.leftovers(region.tag_for(path))
    err = capfd.readouterr().err
    assert "Traceback" not in err and "restarting" not in err, err
    assert "No space left on device" in err, err


def test_open_on_a_full_disk_raises_disk_error_and_loses_nothing(tmp_path):
    """Recovery at open writes segments and a manifest: a full disk there is a
    DiskError (a FuseDBError), not a raw OSError, with nothing left in /dev/shm,
    and the next open, with space back, recovers every write."""
    path = str(tmp_path / "db")
    db = fusedb.open(path, **OPTS)
    for i in range(300):
        db.put(b"k%03d" % i, b"v%d" % i)
    testing.write_out_wal(db, 0)
    crash(db)
    tag = region.tag_for(path)

    def full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with failpoints.armed("segment.write", full):
        with pytest.raises(fusedb.DiskError, match="free space") as info:
            fusedb.open(path, **OPTS)
    assert info.value.errno == errno.ENOSPC
    assert not region.leftovers(tag)
    with fusedb.open(path, **OPTS) as db:
        assert dict(db.scan()) == {b"k%03d" % i: b"v%d" % i for i in range(300)}


STALLED_CHILD = r"""
import atexit, sys, threading
sys.path.insert(0, {tests!r})
import fusedb
from fusedb.core import failpoints
from fusedb.testing import TINY

release = threading.Event()
db = fusedb.open({path!r}, **dict(TINY, write_timeout=60.0))
failpoints.arm("merge.before_publish", lambda: release.wait(30))   # merges hang
atexit.register(release.set)      # runs before FuseDB's own atexit close (LIFO)
n = 0
print("WRITING", flush=True)     # a few hundred puts fill every buffer (TINY)
try:
    while True:
        db.put(b"k%05d" % n, b"v" * 50)
        n += 1
except KeyboardInterrupt:
    print("INTERRUPTED", n, flush=True)
    release.set()
    db.close()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_a_write_stalled_for_memory_at_once(tmp_path, sig):
    """A write waiting (up to write_timeout, 60 s here) for merges that cannot
    run holds no lock: SIGTERM closes the database and SIGINT raises
    KeyboardInterrupt within a fraction of a second, instead of the deferring
    handler waiting for the write to leave FuseDB code. Every acknowledged
    write is kept."""
    path = str(tmp_path / "db")
    child = STALLED_CHILD.format(tests=os.path.dirname(__file__), path=path)
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "WRITING"
        time.sleep(2)                    # the buffers filled in milliseconds: stalled
        sent = time.monotonic()
        p.send_signal(sig)
        out, err = p.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert took < 5, f"the stalled writer took {took:.1f}s to act on the signal"
    if sig == signal.SIGTERM:
        assert p.returncode == 128 + signal.SIGTERM, (p.returncode, err)
    else:
        assert p.returncode == 0 and out.startswith("INTERRUPTED"), (out, err)
    assert "Traceback" not in err, err
    with fusedb.open(path, **TINY) as db:
        got = dict(db.scan())
    assert got and all(v == b"v" * 50 for v in got.values())
    assert sorted(got) == [b"k%05d" % i for i in range(len(got))]
