"""The one fixture of the conformance suite: ``access``, parametrised over every
access mode in access.MODES, one database per mode per test module (processes
start once per module, not per test); ``db`` wipes it before each test."""

from __future__ import annotations

import itertools
import os

import pytest

from fusedb.testing import assert_no_leaks, fusedb_shm

from .access import MODES, OPTS

#: Keys in both halves of the key space (a 2-shard database starts with shard 0
#: below 0x80 and shard 1 above) and with shared prefixes.
KEYS = [b"a", b"a\x00", b"a\x00\x00", b"ab", b"abc", b"b", b"user:1", b"user:10",
        b"user:2", b"\x7f", b"\x80", b"\x80\x00", b"\xfe\xff", b"\xff", b"\xff\xff"]


@pytest.fixture(autouse=True)
def no_leaks():
    """Replaces tests/conftest.py's per-test leak check: the databases here live
    for a whole module; ``access`` checks for leaks once it has closed one."""
    yield


@pytest.fixture(scope="module", params=list(MODES))
def access(request, tmp_path_factory):
    base = os.path.realpath(str(tmp_path_factory.mktemp("conf-" + request.param)))
    before = fusedb_shm(base)
    mode = MODES[request.param](os.path.join(base, "db"), OPTS)
    try:
        mode.open()
        yield mode
    finally:
        mode.close()
        assert_no_leaks(base, before)


@pytest.fixture
def db(access):
    """The mode's handle, holding no live key."""
    access.wipe()
    return access.db


_fresh = itertools.count()


@pytest.fixture
def fresh(access):
    """A factory of extra databases of the same mode (for tests that close or
    stop one), next to the module's one (so its leak check covers them too);
    each is closed at teardown."""
    made = []

    def make():
        where = os.path.join(os.path.dirname(access.path), f"fresh{next(_fresh)}")
        m = type(access)(where, access.opts)
        made.append(m)
        m.open()
        return m
    yield make
    for m in made:
        m.close()


@pytest.fixture
def filled(db):
    want = {k: b"v-" + k for k in KEYS}
    for k, v in want.items():
        db.put(k, v)
    return want
