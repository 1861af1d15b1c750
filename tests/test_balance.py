"""Shard balancing in real worker processes: with default routing, keys that
all start alike still spread over every shard, moves happen online while a
writer goes on, and a worker SIGKILLed at each step of a move loses nothing
and leaves every leaf with one owner (the repair of both shards settles it).
The policy itself is simulated in tests/test_balance_policy.py."""

from __future__ import annotations

import os
import random
import time

import pytest

import fusedb
from fusedb.testing import internals as I

#: Balancing rounds every 20 merge ticks: 0.2 s here.
OPTS = dict(shards=2, merge_tick=0.01, lock_timeout=10.0)
STEPS = ["move.staged", "move.locked", "move.relogged", "move.renamed", "move.before_dir_fsync"]


def load(db, model: dict, rnd: random.Random, seconds: float, until=None) -> int:
    """Write ``user:<n>`` keys (and counters) for ``seconds``, or until ``until()``
    is true after at least 2 s; returns the operations done."""
    start = time.monotonic()
    n = 0
    while True:
        for _ in range(200):
            k = b"user:%d" % rnd.randrange(20000)
            if rnd.random() < 0.8:
                v = b"%d" % n + b"." * 90
                db.put(k, v)
                model[k] = v
            else:
                c = b"session:%04x" % rnd.randrange(500)
                model[c] = b"%d" % db.incr(c)
            n += 1
        spent = time.monotonic() - start
        if spent > seconds or (until is not None and spent > 2 and until()):
            return n


def one_owner_each(db) -> None:
    """Every routed leaf belongs to one existing shard and the bounds are strictly
    increasing (no range owned twice or dropped)."""
    bounds = I.leaf_bounds(db)
    assert bounds == sorted(set(bounds)) and bounds[0] == b""
    for leaf in I.leaves(db):
        assert 0 <= I.shard_of_leaf(db, leaf) < 2


def test_keys_with_one_prefix_spread_over_every_shard(tmp_path):
    """Keys all starting with ``user:`` begin in one shard (a new database splits
    on the first byte); balancing splits and moves leaves until both shards
    hold some, online, and nothing is lost."""
    path = str(tmp_path / "db")
    rnd = random.Random(1)
    model: dict = {}
    with fusedb.open(path, **OPTS) as db:
        def spread():
            return all(s["leaves"] and s["bytes"] for s in db.stats()["shards"])
        load(db, model, rnd, 60, until=lambda: db.stats()["moves"] > 0 and spread())
        stats = db.stats()
        assert stats["moves"] > 0 and spread(), stats["shards"]
        one_owner_each(db)
        assert dict(db.scan()) == model
    with fusedb.open(path, **OPTS) as db:
        assert dict(db.scan()) == model


@pytest.mark.parametrize("step", STEPS)
def test_a_move_killed_at_each_step_loses_nothing(tmp_path, monkeypatch, step):
    """The source shard's worker SIGKILLed at ``step`` of its first move: the
    router restarts it; a shard lock it held is repaired (both shards' locks
    from move.locked to move.renamed); every acknowledged write is there, each
    leaf has one owner, the next moves go on, and a reopen agrees."""
    path = str(tmp_path / "db")
    marker = str(tmp_path / "killed")
    monkeypatch.setenv("FUSEDB_WORKER_FAILPOINTS", f"{step}=killonce:{marker}")
    rnd = random.Random(STEPS.index(step))
    model: dict = {}
    with fusedb.open(path, **OPTS) as db:
        load(db, model, rnd, 90, until=lambda: os.path.exists(marker))
        assert os.path.exists(marker), "no worker reached " + step
        before = db.stats()["moves"]
        load(db, model, rnd, 30, until=lambda: db.stats()["moves"] > before)
        one_owner_each(db)
        assert dict(db.scan()) == model
        assert sum(w["repairs"] for w in db.stats()["workers"]) == (
            2 if step in ("move.locked", "move.relogged", "move.renamed") else 0)
    with fusedb.open(path, **OPTS) as db:
        assert dict(db.scan()) == model
        one_owner_each(db)


def test_repair_settles_a_leaf_the_manifest_and_shared_memory_disagree_on():
    """A process died between a move's manifest rename and its switch in shared
    memory (or the reverse): the leaf is shard 0's in one and shard 1's in the
    other, and both shards are repaired, in either order. Each repair keeps
    every range routed (a range without a leaf would send its keys to the
    leaf before it) and owned once, and after both the manifest's owner has it."""
    from types import SimpleNamespace

    from fusedb.core.manifest import LeafRecord, ManifestData
    from fusedb.worker.repair import settle_routes

    bounds = [b"", b"m", b"t"]
    for shm_owner, man_owner in ((0, 1), (1, 0)):
        for order in ((0, 1), (1, 0)):
            meta = SimpleNamespace(shard=[0, shm_owner, 1], active=[-1, 5, -1],
                                   frozen=[-1, -1, -1])
            man = ManifestData([LeafRecord(b"", 0, [], 0), LeafRecord(b"m", 0, [], man_owner),
                                LeafRecord(b"t", 0, [], 1)], 0, {})
            routes = list(zip(bounds, [0, 1, 2]))
            next_id = 3
            for no in order:
                entries, reuse = settle_routes(meta, man, no, [b for b, _ in routes],
                                               [leaf for _, leaf in routes])
                rebuilt = [lf.lo for lf in man.leaves if lf.shard == no]
                ids = reuse + list(range(next_id, next_id + len(rebuilt)))
                next_id += len(rebuilt)
                for lo, leaf in zip(rebuilt, ids):
                    meta.shard += [0] * (leaf + 1 - len(meta.shard))
                    meta.shard[leaf] = no
                    entries.append((lo, leaf))
                entries.sort()
                got = [lo for lo, _ in entries]
                assert got == bounds, (shm_owner, man_owner, order, entries)
                routes = entries
            assert [meta.shard[leaf] for _, leaf in routes] == [0, man_owner, 1]
