"""``fusedb.connect`` racing other processes' ``open`` and ``close`` (issue 15,
item 2): it raises only documented FuseDBError subclasses (NotRunningError
where nothing is open, ClosedError for a handle whose database closed), never
posix_ipc's errors or a half-made meta block's RuntimeError; while an open is
in progress it waits (up to its timeout) and attaches.

The states a racing connect can meet are made here for real: another process
holding LOCK (flock) while its meta block is a size-0 object (between
shm_open and ftruncate) or not yet filled in; an arena made anew under a
mapped meta block (the database closed and opened again while attaching); a
semaphore unlinked; and real processes opening, closing, starting and
stopping a daemon while others connect in a loop."""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time

import posix_ipc
import pytest

import fusedb
from fusedb.runtime.dirlock import lock_holders
from fusedb.shm import region

HERE = os.path.dirname(__file__)
CHILD = os.path.join(HERE, "connect_race_child.py")
OPENS = 6


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusedb", *args], capture_output=True,
                          text=True, timeout=120)


def wait_for_lock(path: str, pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while pid not in (lock_holders(path) or []):
        assert time.monotonic() < deadline, "the child never took LOCK"
        time.sleep(0.005)


def test_connect_waits_for_an_open_in_progress_and_attaches(tmp_path):
    """The owner's open is slow (each shared-memory object takes 0.3 s to make):
    a connect made once it holds LOCK waits for the open and attaches."""
    path = str(tmp_path / "db")
    script = ("import sys, time, fusedb\n"
              "from fusedb.core import failpoints\n"
              "with failpoints.armed('shm.create', lambda: time.sleep(0.3)):\n"
              f"    db = fusedb.open({path!r}, shards=1)\n"
              "print('open', flush=True)\n"
              "sys.stdin.read()\n"
              "db.close()\n")
    owner = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        wait_for_lock(path, owner.pid)
        # The open had >= 1.5 s to go (it prints once open() returned).
        assert select.select([owner.stdout], [], [], 0)[0] == []
        db = fusedb.connect(path, timeout=60)
        try:
            assert db.incr(b"n") == 1
        finally:
            db.close()
        assert owner.stdout.readline() == "open\n"
    finally:
        owner.stdin.close()
        assert owner.wait(60) == 0


@pytest.fixture
def lock_holder(tmp_path):
    """A process holding the LOCK of a (new) database directory, as an open in
    progress does; yields (path, pid)."""
    path = str(tmp_path / "db")
    os.mkdir(path, 0o700)
    script = ("import fcntl, os, sys\n"
              f"fd = os.open({os.path.join(path, 'LOCK')!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
              "fcntl.flock(fd, fcntl.LOCK_EX)\n"
              "print('locked', flush=True)\n"
              "sys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "locked\n"
        yield path, p
    finally:
        p.stdin.close()
        p.wait(60)


@pytest.mark.parametrize("size", [0, 4096])
def test_a_meta_block_being_made_is_an_open_in_progress(lock_holder, size):
    """size 0: created, not yet sized (mapping it raised ValueError inside open);
    4096 zero bytes: not yet filled in (RuntimeError: not a meta block)."""
    path, holder = lock_holder
    nm = region.name(region.tag_for(path), "meta")
    shm = posix_ipc.SharedMemory(nm, posix_ipc.O_CREX, size=size)
    shm.close_fd()
    try:
        t = time.monotonic()
        with pytest.raises(fusedb.NotRunningError) as ei:
            fusedb.connect(path, timeout=0.5)
        waited = time.monotonic() - t
        assert 0.4 < waited < 10, waited
        assert ei.value.opening and f"by process {holder.pid}" in str(ei.value)
        assert "did not finish within 0.5 s" in str(ei.value)
        with pytest.raises(fusedb.LockedError, match=f"another process \\(pid {holder.pid}\\)"):
            fusedb.open(path, shards=1)
        # The opener died: a leftover, not an open in progress. connect says so at
        # once; the next open removes it and opens.
        holder.stdin.close()
        holder.wait(60)
        t = time.monotonic()
        with pytest.raises(fusedb.NotRunningError, match="no database is open") as ei:
            fusedb.connect(path, timeout=30)
        assert not ei.value.opening and time.monotonic() - t < 5
        with fusedb.open(path, shards=1) as db:
            db.put(b"k", b"v")
            with fusedb.connect(path) as c:
                assert c.get(b"k") == b"v"
    finally:
        try:
            posix_ipc.unlink_shared_memory(nm)
        except posix_ipc.ExistentialError:
            pass        # the open removed it


@pytest.mark.parametrize("what", ["arena0 size 0", "arena0 zeroed", "wake0 unlinked"])
def test_objects_made_anew_or_gone_while_attaching(tmp_path, what):
    """The database closed (its objects unlinked) and the next open is making
    them again, while a connect maps them: an arena not yet sized or filled in
    (raw ValueError and RuntimeError before), a semaphore gone. connect raises
    NotRunningError; the database itself is unharmed."""
    path = str(tmp_path / "db")
    tag = region.tag_for(path)
    with fusedb.open(path, shards=1) as db:
        db.put(b"k", b"v")
        name = what.split()[0]
        nm = region.name(tag, name)
        if name == "arena0":
            posix_ipc.unlink_shared_memory(nm)
            shm = posix_ipc.SharedMemory(nm, posix_ipc.O_CREX,
                                         size=0 if "size 0" in what else 1 << 20)
            shm.close_fd()
        else:
            posix_ipc.unlink_semaphore(nm)
        try:
            with pytest.raises(fusedb.NotRunningError):
                fusedb.connect(path, timeout=0.3)
        finally:
            if name == "wake0":      # close unlinks it: give it one to unlink
                posix_ipc.Semaphore(nm, posix_ipc.O_CREX).close()
        assert db.get(b"k") == b"v"


def test_connect_racing_opens_closes_and_a_daemon(tmp_path):
    """Three processes loop connect / get / incr / close while this one opens and
    closes the database (open(p, shards=1), 6 times) and then starts and
    stops a daemon (fusedb serve --detach / fusedb stop, 3 times). Every
    exception they see is NotRunningError or ClosedError; none gave
    up waiting for an open; once nothing is open, connect raises
    NotRunningError at once."""
    path = str(tmp_path / "db")
    done = str(tmp_path / "done")
    rng = random.Random(15)
    kids = [subprocess.Popen([sys.executable, CHILD, path, done], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for _ in range(OPENS):
            with fusedb.open(path, shards=1) as db:
                db.incr(b"opens")
                time.sleep(rng.choice((0, 0.002, 0.02, 0.1)))
        for _ in range(3):
            r = cli("serve", path, "--detach", "--shards", "1")
            assert r.returncode == 0, r.stderr
            time.sleep(rng.choice((0, 0.02, 0.1)))
            r = cli("stop", path)
            assert r.returncode == 0, r.stderr
    finally:
        with open(done, "w"):
            pass
        outs = [k.communicate(timeout=120) for k in kids]
    reports = []
    for (out, err), k in zip(outs, kids):
        assert k.returncode == 0 and "Traceback" not in err, err
        reports.append(json.loads(out))
    seen = {name for r in reports for name in r["errors"]}
    assert [r["raw"] for r in reports] == [[], [], []]
    assert seen <= {"NotRunningError", "ClosedError"}, reports
    assert sum(r["gave_up"] for r in reports) == 0, reports
    assert sum(r["ok"] for r in reports) > 0, reports
    for r in reports:
        assert r["final"] == ["NotRunningError"] * 3 and r["final_seconds"] < 2, r
    with fusedb.open(path) as db:            # the database after: every write kept
        assert int(db.get(b"opens")) == OPENS
        assert int(db.get(b"clients")) >= sum(r["ok"] for r in reports)
