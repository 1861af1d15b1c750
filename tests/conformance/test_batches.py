"""Batches (README, "Batches"): applied on a clean exit, all or nothing whatever
shards they span, one result per op, arguments checked as they are added."""

from __future__ import annotations

import pytest

import fusedb

LO, HI = b"\x10", b"\x90"      # two shards of a 2-shard database


def test_results_and_effects(db):
    db.put(LO + b"e", b"v")
    db.put(HI + b"c", b"41")
    with db.batch() as b:
        b.put(LO + b"a", b"1")
        b.incr(HI + b"c")
        b.incr(LO + b"n", 5)
        b.delete(LO + b"e")
        b.delete(LO + b"none")
        b.expire(LO + b"a", 30)
        b.expire(HI + b"none", 30)
        b.put(HI + b"t", b"x", ttl=20)
    assert b.results == [None, 42, 5, True, False, True, False, None]
    assert db.get(LO + b"a") == b"1" and 29 <= db.ttl(LO + b"a") <= 30
    assert db.get(HI + b"c") == b"42" and db.get(LO + b"n") == b"5"
    assert db.get(LO + b"e") is None and 19 <= db.ttl(HI + b"t") <= 20


def test_ops_see_earlier_ops_of_the_batch(db):
    with db.batch() as b:
        b.put(LO + b"k", b"5")
        b.incr(LO + b"k", 2)
        b.delete(HI + b"k")
        b.incr(HI + b"k")
        b.incr(HI + b"k")
        b.put(LO + b"d", b"x")
        b.delete(LO + b"d")
        b.expire(LO + b"d", None)
    assert b.results == [None, 7, False, 1, 2, None, True, False]
    assert dict(db.scan()) == {LO + b"k": b"7", HI + b"k": b"2"}


def test_commit_returns_results(db):
    b = db.batch()
    b.put(LO + b"x", b"1")
    b.incr(HI + b"x")
    assert b.commit() == [None, 1] == b.results
    with pytest.raises(fusedb.ClosedError):
        b.commit()                       # committed once
    with pytest.raises(fusedb.ClosedError):
        b.put(LO + b"y", b"1")


def test_empty_batch(db):
    with db.batch() as b:
        pass
    assert b.results == []


@pytest.mark.parametrize("failing", ["not-an-integer", "overflow"])
def test_a_failing_op_applies_nothing_in_any_shard(db, failing):
    db.put(LO + b"keep", b"old")
    db.put(HI + b"keep", b"old")
    db.incr(HI + b"n", 3)
    db.put(LO + b"s", b"text")
    db.incr(LO + b"max", 2 ** 63 - 1)
    before = dict(db.scan())
    with pytest.raises(fusedb.NotAnIntegerError if failing == "not-an-integer"
                       else fusedb.IntegerOverflowError):
        with db.batch() as b:
            b.put(LO + b"keep", b"new")
            b.put(HI + b"keep", b"new")
            b.incr(HI + b"n")
            b.delete(HI + b"n")
            b.put(HI + b"new", b"v", ttl=5)
            b.expire(LO + b"keep", 5)
            b.incr(LO + b"s" if failing == "not-an-integer" else LO + b"max")
            b.put(LO + b"after", b"v")
    assert b.results is None
    assert dict(db.scan()) == before
    assert db.ttl(LO + b"keep") == fusedb.TTL_NONE


def test_an_exception_in_the_block_applies_nothing(db):
    with pytest.raises(RuntimeError):
        with db.batch() as b:
            b.put(LO + b"a", b"1")
            b.put(HI + b"a", b"1")
            raise RuntimeError("user code")
    assert dict(db.scan()) == {}
    with pytest.raises(fusedb.ClosedError):
        b.commit()                       # discarded


def test_arguments_are_checked_as_added(db, access):
    mk, mv = access.opts["max_key_size"], access.opts["max_value_size"]
    with db.batch() as b:
        b.put(LO + b"ok", b"1")
        for call, err in [(lambda: b.put(1, b"v"), fusedb.KeyTypeError),
                          (lambda: b.put(LO, "str"), fusedb.ValueTypeError),
                          (lambda: b.put(b"", b"v"), fusedb.KeyTooLargeError),
                          (lambda: b.put(b"k" * (mk + 1), b"v"), fusedb.KeyTooLargeError),
                          (lambda: b.put(LO, b"v" * (mv + 1)), fusedb.ValueTooLargeError),
                          (lambda: b.put(LO, b"v", ttl=0), fusedb.InvalidArgumentError),
                          (lambda: b.put(LO, b"v", ttl="1"), fusedb.ValueTypeError),
                          (lambda: b.incr(LO, 1.5), fusedb.ValueTypeError),
                          (lambda: b.incr(LO, 2 ** 63), fusedb.IntegerOverflowError),
                          (lambda: b.delete(None), fusedb.KeyTypeError),
                          (lambda: b.expire(LO, -1), fusedb.InvalidArgumentError)]:
            with pytest.raises(err):
                call()
    assert b.results == [None]           # the refused ops were not added
    assert dict(db.scan()) == {LO + b"ok": b"1"}


def test_a_batch_larger_than_a_buffer_applies_nothing(db, access):
    mv = access.opts["max_value_size"]
    n = access.opts["buffer_bytes"] // mv + 2
    with pytest.raises(fusedb.InvalidArgumentError):
        with db.batch() as b:
            b.put(HI + b"first", b"v")
            for i in range(n):
                b.put(LO + b"big%03d" % i, b"x" * mv)
    assert dict(db.scan()) == {}


def test_a_batch_larger_than_a_buffer_in_another_shard_applies_nothing(db, access):
    mv = access.opts["max_value_size"]
    n = access.opts["buffer_bytes"] // mv + 2
    with pytest.raises(fusedb.InvalidArgumentError):
        with db.batch() as b:
            for i in range(n):
                b.put(HI + b"big%03d" % i, b"x" * mv)
            b.put(LO + b"last", b"v")
    assert dict(db.scan()) == {}


def test_many_batches_through_merges(db):
    want = {}
    for r in range(60):
        with db.batch() as b:
            for i in range(5):
                k = (LO if i % 2 else HI) + b"m%03d" % ((r * 5 + i) % 97)
                b.put(k, b"r%d" % r)
                want[k] = b"r%d" % r
            b.incr(LO + b"count")
    want[LO + b"count"] = b"60"
    assert dict(db.scan()) == want
