"""Shared fixtures. Every test fails if it leaves FuseDB shared-memory objects in
/dev/shm, FuseDB threads running, or FuseDB worker processes alive (invariant 5:
clean shared memory; and no stray processes)."""

from __future__ import annotations

import os

import pytest

import fusedb
from fusedb.testing import TINY, FakeClock, assert_no_leaks, fusedb_shm


@pytest.fixture(autouse=True)
def no_leaks(tmp_path_factory):
    base = os.path.realpath(str(tmp_path_factory.getbasetemp()))
    before = fusedb_shm(base)
    yield
    assert_no_leaks(base, before)


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
