"""Shared fixtures. Every test fails if it leaves FuseDB shared-memory objects in
/dev/shm or FuseDB threads running (invariant 5: clean shared memory)."""

from __future__ import annotations

import os
import threading

import pytest

import fusedb

SHM = "/dev/shm"

#: Small sizes so that a few hundred operations freeze buffers, merge and split.
TINY = dict(buffer_bytes=4096, buffer_slots=16, arena_bytes=4096 * 16, leaf_max_bytes=1500,
            max_key_size=32, max_value_size=200, hot_fills=3, min_split_entries=8,
            merge_tick=0.002, write_timeout=30.0)


def fusedb_shm() -> set[str]:
    return {e for e in os.listdir(SHM) if "fusedb-" in e}


def fusedb_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fusedb-")]


@pytest.fixture(autouse=True)
def no_leaks():
    before = fusedb_shm()
    yield
    leaked = fusedb_shm() - before
    threads = fusedb_threads()
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
