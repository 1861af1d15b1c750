"""Random operations against a dict model with the background worker racing the
caller (merges and splits while writing), reopening now and then. Seeded, so a
failure names its seed. This found a real bug: a buffer frozen by a writer while
a split was merging got overwritten by the split's own freeze."""

from __future__ import annotations

import random

import pytest

import fusedb

from fusedb.testing import TINY, FakeClock

SMALL = dict(TINY, buffer_slots=4, leaf_max_bytes=400, min_split_entries=4, hot_fills=2)


@pytest.mark.parametrize("seed", range(8))
def test_random_ops_with_reopen(tmp_path, seed):
    rnd = random.Random(seed)
    path = str(tmp_path / "d")
    clock = FakeClock()
    db = fusedb.open(path, clock=clock, **SMALL)
    model: dict[bytes, bytes] = {}
    merged = 0
    try:
        for step in range(250):
            k = rnd.choice([b"k%02d" % rnd.randrange(60), rnd.randbytes(rnd.randrange(1, 8))])
            r = rnd.random()
            if r < 0.35:
                v = rnd.randbytes(rnd.randrange(0, 40))
                db.put(k, v)
                model[k] = v
            elif r < 0.5:
                try:
                    model[k] = str(db.incr(k)).encode()
                except fusedb.NotAnIntegerError:
                    assert not model[k].lstrip(b"-").isdigit() or model[k].startswith(b"0")
            elif r < 0.6:
                assert db.delete(k) is (k in model)
                model.pop(k, None)
            elif r < 0.7:
                with db.batch() as b:
                    for _ in range(rnd.randrange(1, 4)):
                        kk, vv = b"k%02d" % rnd.randrange(60), rnd.randbytes(5)
                        b.put(kk, vv)
                        model[kk] = vv
            elif r < 0.75:
                merged += db.stats()["merges"]
                db.close()
                db = fusedb.open(path, clock=clock, **SMALL)
            assert dict(db.scan()) == model, f"seed {seed} step {step}"
        merged += db.stats()["merges"]
        assert merged > 0, "the sizes must make the worker merge"
    finally:
        db.close()
