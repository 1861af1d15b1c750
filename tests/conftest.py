"""Shared fixtures. Every test fails if it leaves FuseDB shared-memory objects in
/dev/shm, FuseDB threads running, or FuseDB worker processes alive (invariant 5:
clean shared memory; and no stray processes)."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

import fusedb
from fusedb.shm import region

SHM = "/dev/shm"

#: Small sizes so that a few hundred operations freeze buffers, merge and split.
TINY = dict(buffer_bytes=4096, buffer_slots=16, arena_bytes=4096 * 16, leaf_max_bytes=1500,
            max_key_size=32, max_value_size=200, hot_fills=3, min_split_entries=8,
            merge_tick=0.002, write_timeout=30.0)


def fusedb_shm(base: str | None = None) -> set[str]:
    """FuseDB objects in /dev/shm; with ``base``, only those of databases in
    directories under ``base`` (so test runs in other directories, running at
    the same time, are not mistaken for leaks of this one)."""
    found = {e for e in os.listdir(SHM) if "fusedb-" in e}
    if base is None:
        return found
    tags = set()
    for root, _dirs, _files in os.walk(base):
        tags.add(region.tag_for(root))
    return {e for e in found if e.split("fusedb-", 1)[1].split("-", 1)[0] in tags}


def fusedb_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fusedb-")]


def fusedb_processes(base: str) -> list[psutil.Process]:
    """Live FuseDB worker processes of databases under ``base`` (this session's
    temporary directory; orphaned ones included), and children of this process."""
    found = []
    me = psutil.Process()
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = p.info["cmdline"] or []
            if "fusedb.worker.process" in cmd and any(a.startswith(base) for a in cmd):
                found.append(p)
        except psutil.Error:
            pass
    for c in me.children(recursive=True):
        try:
            # multiprocessing's helper lives as long as this process, by design.
            if "multiprocessing.resource_tracker" in " ".join(c.cmdline()):
                continue
            if c.status() != psutil.STATUS_ZOMBIE and c not in found:
                found.append(c)
        except psutil.Error:
            pass
    return found


@pytest.fixture(autouse=True)
def no_leaks(tmp_path_factory):
    base = os.path.realpath(str(tmp_path_factory.getbasetemp()))
    before = fusedb_shm(base)
    yield
    # Processes get a moment to finish exiting (an orphaned worker notices its
    # router's death within a tick).
    deadline = time.monotonic() + 10
    while fusedb_processes(base) and time.monotonic() < deadline:
        time.sleep(0.05)
    procs = fusedb_processes(base)
    for p in procs:
        p.kill()
    leaked = fusedb_shm(base) - before
    threads = fusedb_threads()
    assert not procs, f"test left processes running: {procs}"
    assert not leaked, f"test leaked shared-memory objects: {sorted(leaked)}"
    assert not threads, f"test left FuseDB threads running: {threads}"


class FakeClock:
    """Injectable clock: time moves only when a test advances it."""

    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def db(tmp_path, clock):
    d = fusedb.open(str(tmp_path / "db"), clock=clock)
    yield d
    d.close()


@pytest.fixture
def tiny(tmp_path, clock):
    d = fusedb.open(str(tmp_path / "db"), clock=clock, **TINY)
    yield d
    d.close()
