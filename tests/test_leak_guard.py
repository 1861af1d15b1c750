"""The leak guard itself must be able to fail."""

import threading

import posix_ipc
import pytest

from fusedb.testing import fusedb_shm, fusedb_threads


def test_guard_sees_a_leaked_shm_object():
    name = "/fusedb-guardtest-x"
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=4096)
    try:
        assert any("guardtest" in e for e in fusedb_shm())
    finally:
        shm.close_fd()
        shm.unlink()
    assert not any("guardtest" in e for e in fusedb_shm())


def test_guard_sees_a_leaked_thread():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="fusedb-guardtest")
    t.start()
    try:
        assert t in fusedb_threads()
    finally:
        stop.set()
        t.join()


def test_closed_database_leaves_nothing(tmp_path):
    import fusedb
    base = str(tmp_path)
    before = fusedb_shm(base)
    db = fusedb.open(str(tmp_path / "d"))
    assert fusedb_shm(base) - before, "an open database holds shared memory"
    assert fusedb_threads()
    db.put(b"k", b"v")
    db.close()
    assert fusedb_shm(base) == before
    assert not fusedb_threads()


def test_stale_objects_of_a_crashed_run_are_removed_on_open(tmp_path):
    import fusedb
    from fusedb.shm import region
    path = str(tmp_path / "d")
    import os
    os.makedirs(path)
    tag = region.tag_for(path)
    stale = posix_ipc.SharedMemory(region.name(tag, "arena0"), posix_ipc.O_CREX, size=4096)
    stale.close_fd()
    sem = posix_ipc.Semaphore(region.name(tag, "lock0"), posix_ipc.O_CREX, initial_value=0)
    sem.close()
    db = fusedb.open(path)   # would fail with ExistentialError if it did not clean up
    db.put(b"a", b"b")
    assert db.get(b"a") == b"b"
    db.close()
    assert not region.leftovers(tag)
    with pytest.raises(posix_ipc.ExistentialError):
        posix_ipc.SharedMemory(region.name(tag, "arena0"))
