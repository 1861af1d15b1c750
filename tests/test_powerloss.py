"""Power-loss simulation: a file layer (tests/powerloss.py) forgets every byte and
directory change not fsynced; the shared memory is lost too. The database is
crashed at chosen moments — in the middle of a merge, of a split, of a manifest
or segment publication, of a WAL truncation — or at a random operation, then
reopened.

What must hold: the recovered state is exactly the state after some prefix of
the acknowledged operations (nothing reordered, nothing half-applied, no deleted
key back, counters equal to the sum of the increments of that prefix); in
``sync`` mode the prefix is all of them."""

from __future__ import annotations

import os
import random
import threading

import pytest

import fusedb
from fusedb.core import failpoints

from fusedb.testing import TINY, Model, power_cut
from crash_ops import apply, model, op
from powerloss import install

OPTS = dict(TINY, wal_file_bytes=8192, wal_ring_bytes=16384, max_value_size=200,
            write_timeout=1.0)
POINTS = ["merge.before_publish", "split.before_publish", "publish.before_rename",
          "publish.before_dir_fsync", "wal.before_unlink", None]


class Halt(Exception):
    """Raised in the frozen worker after the power loss, to end it without I/O."""


@pytest.mark.parametrize("mode", ["sync", "interval", "none"])
@pytest.mark.parametrize("point", POINTS, ids=[p or "random" for p in POINTS])
def test_power_loss_keeps_a_prefix(tmp_path, mode, point):
    path = str(tmp_path / "db")
    os.makedirs(path)
    seed = POINTS.index(point) * 7 + ["sync", "interval", "none"].index(mode)
    sim, undo = install(path)
    crashing = threading.Event()
    hold = threading.Event()

    def freeze():
        if threading.current_thread().name.startswith("fusedb-worker"):
            crashing.set()
            hold.wait(30)
            raise Halt()

    limit = random.Random(seed).randrange(200, 1500) if point is None else 6000
    acked = 0
    try:
        db = fusedb.open(path, durability=mode, **OPTS)
        with failpoints.armed(point or "none", freeze):
            for i in range(limit):
                try:
                    apply(db, op(seed, i))
                except fusedb.WriteStallError:
                    assert crashing.is_set()   # waiting on the frozen merge: not applied
                    break
                acked = i + 1
                if crashing.is_set():
                    break
        assert point is None or crashing.is_set(), f"{point} was never reached"
        power_cut(db, sim, undo, hold)
    finally:
        undo()
        hold.set()
    with fusedb.open(path, **OPTS) as db:
        got = dict(db.scan())
    state = Model()
    prefixes = [0] if state.live() == got else []
    for i in range(acked):
        model(state, op(seed, i))
        if state.live() == got:
            prefixes.append(i + 1)
    assert prefixes, "the recovered state is not the state after any prefix of the writes"
    if mode == "sync":
        assert prefixes[-1] == acked, f"sync lost acknowledged writes: {prefixes[-1]} < {acked}"
