"""Random operations against a dict model with the background worker racing the
caller (merges and splits while writing), reopening now and then. Seeded, so a
failure names its seed. This found a real bug: a buffer frozen by a writer while
a split was merging got overwritten by the split's own freeze."""

from __future__ import annotations

import random

import pytest

import fusedb

from fusedb.testing import SMALL, FakeClock, Model, outcome


@pytest.mark.parametrize("seed", range(8))
def test_random_ops_with_reopen(tmp_path, seed):
    rnd = random.Random(seed)
    path = str(tmp_path / "d")
    clock = FakeClock()
    db = fusedb.open(path, clock=clock, **SMALL)
    model = Model()          # the clock never moves: no TTLs here
    merged = 0
    try:
        for step in range(250):
            k = rnd.choice([b"k%02d" % rnd.randrange(60), rnd.randbytes(rnd.randrange(1, 8))])
            r = rnd.random()
            if r < 0.35:
                v = rnd.randbytes(rnd.randrange(0, 40))
                db.put(k, v)
                model.put(k, v, None, clock.t)
            elif r < 0.5:
                assert outcome(db.incr, k) == outcome(model.incr, k, 1, clock.t)
            elif r < 0.6:
                assert db.delete(k) is model.delete(k, clock.t)
            elif r < 0.7:
                ops = [("put", b"k%02d" % rnd.randrange(60), rnd.randbytes(5), None)
                       for _ in range(rnd.randrange(1, 4))]
                with db.batch() as b:
                    for _op, kk, vv, _ttl in ops:
                        b.put(kk, vv)
                model.batch(ops, clock.t)
            elif r < 0.75:
                merged += db.stats()["merges"]
                db.close()
                db = fusedb.open(path, clock=clock, **SMALL)
            assert dict(db.scan()) == model.live(clock.t), f"seed {seed} step {step}"
        merged += db.stats()["merges"]
        assert merged > 0, "the sizes must make the worker merge"
    finally:
        db.close()
