"""Moving a leaf between shards (fusedb.shard.moving): every key readable and
writable across a move, in shared memory and after a crash, a power loss or a
close; the old slab kept until the copy is durable; a leaf with a frozen
buffer not moved. Embedded databases with their merge loops stopped, so the
test moves and merges by hand (the multiprocess moves, killed at every step,
are in tests/test_balance.py)."""

from __future__ import annotations

import random
import time

import pytest

import fusedb
from fusedb.testing import internals as I

OPTS = dict(shards=3, mode="embedded", sync_interval=0.01)


def check(db, model: dict) -> None:
    assert dict(db.scan()) == model
    for k, v in random.sample(sorted(model.items()), min(50, len(model))):
        assert db.get(k) == v


def writes(db, model: dict, rnd: random.Random, n: int, keys: int = 400) -> None:
    for _ in range(n):
        k = b"user:%d" % rnd.randrange(keys)
        r = rnd.random()
        if r < 0.5:
            v = b"v%d" % rnd.randrange(10**6)
            db.put(k, v)
            model[k] = v
        elif r < 0.8:
            c = b"hits:%d" % rnd.randrange(20)
            model[c] = b"%d" % db.incr(c)
        elif r < 0.9:
            db.delete(k)
            model.pop(k, None)
        else:
            db.put(k, b"t", ttl=3600)
            model[k] = b"t"


def stopped(path: str, **extra):
    db = fusedb.open(path, **OPTS, **extra)
    for no in range(3):
        I.stop_worker(db, no)
    return db


def hundred_keys(tmp_path, **extra):
    """An embedded database (merge loops stopped) holding k000..k099 in one
    buffered leaf: (db, that leaf, its shard, the next shard)."""
    db = stopped(str(tmp_path / "db"), **extra)
    for i in range(100):
        db.put(b"k%03d" % i, b"v%d" % i)
    leaf = I.leaf_of(db, b"k000")
    src = I.shard_of_leaf(db, leaf)
    return db, leaf, src, (src + 1) % 3


@pytest.mark.parametrize("seed", range(4))
def test_moves_keep_every_key_through_crash_and_reopen(tmp_path, seed):
    """Random writes, merges, splits and moves of random leaves to random
    shards, checked against a dict after each step; then a crash (shared
    memory left as SIGKILL leaves it) and a reopen, and a clean close and
    reopen, keep exactly the model."""
    rnd = random.Random(seed)
    path = str(tmp_path / "db")
    model: dict = {}
    db = stopped(path)
    moved = 0
    for _step in range(40):
        writes(db, model, rnd, rnd.randrange(1, 150))
        leaf = rnd.choice(I.leaves(db))
        what = rnd.random()
        if what < 0.5:
            dst = rnd.randrange(3)
            src = I.shard_of_leaf(db, leaf)
            ok = I.move_leaf(db, leaf, dst)
            assert ok == (dst != src)
            assert I.shard_of_leaf(db, leaf) == dst
            moved += ok
        elif what < 0.8:
            I.merge_leaf(db, leaf, full=rnd.random() < 0.5)
        else:
            I.merge_leaf(db, leaf, full=True, split=True)
        check(db, model)
    assert moved > 5
    if seed % 2:
        I.crash(db)
    else:
        db.close()
    with fusedb.open(path, **OPTS) as db:
        check(db, model)
        writes(db, model, rnd, 200)
        check(db, model)
    with fusedb.open(path, **OPTS) as db:
        check(db, model)


def test_a_leaf_with_a_frozen_buffer_does_not_move(tmp_path):
    db = stopped(str(tmp_path / "db"), buffer_slots=64, buffer_bytes=16384, max_value_size=1024)
    try:
        for i in range(70):              # more keys than one buffer's slots: it froze
            db.put(b"k%03d" % i, b"v")
        leaf = I.leaf_of(db, b"k000")
        src = I.shard_of_leaf(db, leaf)
        dst = (src + 1) % 3
        assert not I.move_leaf(db, leaf, dst)
        assert I.shard_of_leaf(db, leaf) == src
        I.merge_leaf(db, leaf)
        assert I.move_leaf(db, leaf, dst)
        assert I.shard_of_leaf(db, leaf) == dst
        assert dict(db.scan()) == {b"k%03d" % i: b"v" for i in range(70)}
    finally:
        db.close()


def test_the_old_slab_waits_for_the_copy_to_be_durable(tmp_path):
    """The moved leaf's old slab holds the source shard's WAL floor until the
    destination's WAL has the copy on disk; then it is freed."""
    db, leaf, src, dst = hundred_keys(tmp_path)
    try:
        free = db.stats()["shards"][src]["slabs_free"]
        assert I.move_leaf(db, leaf, dst)
        (sid, waits), = I.orphans(db, src)
        assert [no for no, _pos in waits] == [dst]
        assert db.stats()["shards"][src]["slabs_free"] == free   # still held
        from fusedb.shard.moving import free_orphans
        merger = db._store.mergers[src]
        for _ in range(200):
            free_orphans(merger)
            if not merger.orphans:
                break
            time.sleep(0.01)
        assert not merger.orphans
        assert db.stats()["shards"][src]["slabs_free"] == free + 1
        assert dict(db.scan()) == {b"k%03d" % i: b"v%d" % i for i in range(100)}
    finally:
        db.close()


@pytest.mark.parametrize("copy_durable", [False, True])
def test_a_moved_leaf_survives_a_power_loss(tmp_path, copy_durable):
    """A power loss (the disk as of its last fsyncs) after a move and a manifest
    write keeps every acknowledged write: while the destination's WAL has not
    made the copy durable (its WAL writer stopped), the old slab holds the
    source's WAL (released at once, its files would be truncated and the
    writes lost); once durable, the old slab is freed."""
    import powerloss
    path = str(tmp_path / "db")
    fusedb.open(path, **OPTS).close()
    sim, undo = powerloss.install(path)
    db = stopped(path, durability="sync")
    model = {}
    try:
        for i in range(300):
            db.put(b"k%03d" % i, b"v%d" % i)
            model[b"k%03d" % i] = b"v%d" % i
        leaf = I.leaf_of(db, b"k000")
        src = I.shard_of_leaf(db, leaf)
        dst = (src + 1) % 3
        if not copy_durable:
            I.pause_wal_writer(db, dst)
        assert I.move_leaf(db, leaf, dst)
        from fusedb.shard.moving import free_orphans
        merger = db._store.mergers[src]
        for _ in range(300 if copy_durable else 20):
            free_orphans(merger)
            if not merger.orphans:
                break
            time.sleep(0.01)
        assert bool(merger.orphans) != copy_durable
        merger.write_manifest()          # truncates the source's WAL as far as it can
        I.power_cut(db, sim, undo)
    except BaseException:
        undo()
        raise
    with fusedb.open(path, **OPTS) as db:
        assert dict(db.scan()) == model


def test_writes_between_the_snapshot_and_the_locks_are_logged_again_too(tmp_path):
    """The active buffer's entries are encoded from a copy taken before the
    locks; the writes made to the leaf after that copy (overwrites in place,
    new keys, increments, deletes) are found by their seqnos under the locks
    and logged again as well: after a crash, replay from the destination's WAL
    alone (the source's files deleted) has them."""
    from fusedb.core import failpoints
    path = str(tmp_path / "db")
    db = stopped(path)
    model = {}
    for i in range(200):
        db.put(b"k%03d" % i, b"v%d" % i)
        model[b"k%03d" % i] = b"v%d" % i

    def meanwhile():
        for i in range(0, 200, 3):
            db.put(b"k%03d" % i, b"new%d" % i)
            model[b"k%03d" % i] = b"new%d" % i
        for i in range(200, 230):
            db.put(b"k%03d" % i, b"added")
            model[b"k%03d" % i] = b"added"
        model[b"k-count"] = b"%d" % db.incr(b"k-count", 7)
        db.delete(b"k001")
        model.pop(b"k001")

    leaf = I.leaf_of(db, b"k000")
    src = I.shard_of_leaf(db, leaf)
    with failpoints.armed("move.staged", meanwhile):
        assert I.move_leaf(db, leaf, (src + 1) % 3)
    assert dict(db.scan()) == model
    # The source's records of the leaf must not be needed: drop its WAL files.
    I.crash(db)
    import glob
    import os
    for f in glob.glob(os.path.join(path, f"wal-{src:03d}-*.log")):
        os.unlink(f)
    with fusedb.open(path, **OPTS) as db:
        assert dict(db.scan()) == model


def test_a_failed_manifest_rename_leaks_no_destination_slab(tmp_path):
    """The manifest's rename can fail (EIO) after the destination slab was taken
    and the copy logged: the move raises, the leaf stays, the slab goes back
    (a leaked one would also pin the destination's WAL for good)."""
    import errno

    from fusedb.core import failpoints

    def eio():
        raise OSError(errno.EIO, "injected rename failure")

    db, leaf, src, dst = hundred_keys(tmp_path)
    try:
        free = db.stats()["shards"][dst]["slabs_free"]
        with failpoints.armed("publish.before_rename", eio):
            with pytest.raises(OSError):
                I.move_leaf(db, leaf, dst)
        assert I.shard_of_leaf(db, leaf) == src
        assert dict(db.scan()) == {b"k%03d" % i: b"v%d" % i for i in range(100)}
        assert db.stats()["shards"][dst]["slabs_free"] == free, "destination slab leaked"
    finally:
        db.close()


def test_a_repair_waits_for_the_copies_the_old_slabs_hold_the_wal_for(tmp_path):
    """A repair of the source rebuilds its arena, old slabs of moved leaves
    included: first it waits (bounded) until the destinations' copies are
    durable, since those slabs held the source's WAL for them, and it forgets
    them (a stale entry could later free a slab reused by another leaf)."""
    from fusedb.shard.moving import settle_orphans_before_repair
    db = stopped(str(tmp_path / "db"), durability="sync")
    try:
        for i in range(100):
            db.put(b"k%03d" % i, b"v%d" % i)
        leaf = I.leaf_of(db, b"k000")
        src = I.shard_of_leaf(db, leaf)
        merger = db._store.mergers[src]
        assert I.move_leaf(db, leaf, (src + 1) % 3)
        assert merger.orphans
        assert settle_orphans_before_repair(merger, 5.0)       # its WAL writer runs
        assert merger.orphans == []
        leaf = I.leaf_of(db, b"k050")
        src2 = I.shard_of_leaf(db, leaf)
        dst2 = (src2 + 1) % 3
        I.pause_wal_writer(db, dst2)                           # never durable now
        merger = db._store.mergers[src2]
        db.put(b"k050", b"again")
        assert I.move_leaf(db, leaf, dst2)
        t = time.monotonic()
        assert not settle_orphans_before_repair(merger, 0.2)
        assert 0.2 <= time.monotonic() - t < 2
        assert merger.orphans == []
    finally:
        I.crash(db)
    with fusedb.open(str(tmp_path / "db"), **OPTS) as db:
        want = {b"k%03d" % i: b"v%d" % i for i in range(100)}
        want[b"k050"] = b"again"
        assert dict(db.scan()) == want
