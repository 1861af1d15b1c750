"""``db.transact(fn, keys)`` (fusedb.api.transaction): an interactive batch, the
primitive Redis's MULTI/EXEC and EVAL run on. Reads see the transaction's own
writes, the writes apply all together when fn returns and not at all when it
raises, a key outside the declared keys' shards reruns fn with every shard
locked, and the calls with no database counterpart (entry, put_at, expire_at,
keys) behave as documented; in every access mode, with entries in the buffers
and in segments. The model-based rule is in test_model.py."""

from __future__ import annotations

import pytest

import fusedb
from fusedb.api.transaction import Retry
from fusedb.testing import internals

LONG = 1000.0


@pytest.fixture(params=["buffer", "segment"])
def where(request, db):
    return (lambda: db.flush()) if request.param == "segment" else (lambda: None)


def test_reads_see_own_writes_and_results_come_at_once(db, where):
    db.put(b"a", b"1")
    db.incr(b"n", 5)
    where()

    def fn(tx):
        assert tx.get(b"a") == b"1" and b"a" in tx and b"zz" not in tx
        tx.put(b"a", b"2")
        assert tx.get(b"a") == b"2"
        assert tx.incr(b"n", 2) == 7 and tx.decr(b"n") == 6
        assert tx.delete(b"a") is True and tx.get(b"a") is None
        assert tx.add(b"a", b"3") is True and tx.getdel(b"a") == b"3"
        return tx.get_many([b"n", b"a"])
    assert db.transact(fn, [b"a", b"n"]) == [b"6", None]
    assert db.get(b"a") is None and db.get(b"n") == b"6"


def test_fn_raising_writes_nothing(db, where):
    db.put(b"a", b"1")
    where()
    before = db.stats()["logical_bytes_written"]

    def fn(tx):
        tx.put(b"a", b"2")
        tx.put(b"b", b"2")
        raise KeyError("stop")
    with pytest.raises(KeyError):
        db.transact(fn, [b"a", b"b"])
    assert db.get(b"a") == b"1" and db.get(b"b") is None
    assert db.stats()["logical_bytes_written"] == before


def test_a_failing_command_caught_inside_fn_leaves_the_others(db):
    """What Redis's EXEC and scripts do with a command error: the others apply."""
    db.put(b"text", b"abc")

    def fn(tx):
        tx.put(b"x", b"1")
        with pytest.raises(fusedb.NotAnIntegerError):
            tx.incr(b"text")
        tx.put(b"y", b"2")
    db.transact(fn, [b"x", b"y", b"text"])
    assert db.get(b"x") == b"1" and db.get(b"y") == b"2" and db.get(b"text") == b"abc"


def test_undeclared_key_reruns_with_every_shard(db):
    keys = [bytes([1 + 50 * i]) + b"k" for i in range(6)]
    runs = []

    def fn(tx):
        runs.append(1)
        for k in keys:
            tx.put(k, b"v")
        return len(keys)
    assert db.transact(fn, [keys[0]]) == 6
    assert all(db.get(k) == b"v" for k in keys)
    assert len(runs) <= 2
    shards = {internals.shard_of_leaf(db, internals.leaf_of(db, k)) for k in keys}
    assert len(runs) == (2 if len(shards) > 1 else 1), "another shard: attempt dropped"


def test_retry_passes_through_except_exception(db):
    """fn's own ``except Exception`` does not swallow the rerun signal."""
    assert issubclass(Retry, BaseException) and not issubclass(Retry, Exception)
    seen = []

    def fn(tx):
        try:
            return tx.keys()
        except Exception as e:  # noqa: BLE001 - what the test is about
            seen.append(e)
    db.put(b"p", b"1")
    assert db.transact(fn, [b"p"]) == [b"p"] and seen == []


def test_entry_put_at_expire_at(db, where):
    db.put(b"v", b"x")
    db.incr(b"c", 3, ttl=LONG)
    where()

    def fn(tx):
        t = tx.now
        assert tx.entry(b"v") == (b"x", 0.0)
        value, exp = tx.entry(b"c")
        assert value == b"3" and t + LONG - 5 < exp <= t + LONG
        assert tx.entry(b"nope") is None
        tx.put_at(b"at", b"1", t + 500)
        assert 499 < tx.ttl(b"at") <= 500
        tx.put_at(b"past", b"1", t - 1)
        assert tx.get(b"past") is None
        assert tx.expire_at(b"c", 0.0) is True and tx.ttl(b"c") == -1.0
        assert tx.expire_at(b"v", t - 1) is True and tx.get(b"v") is None
        assert tx.expire_at(b"nope", t + 5) is False
        assert tx.ttl(b"nope") == -2.0
        with pytest.raises(fusedb.InvalidArgumentError):
            tx.put_at(b"bad", b"1", float("nan"))
    db.transact(fn)
    assert db.get(b"v") is None and db.get(b"past") is None
    assert db.ttl(b"c") == -1.0 and db.get(b"c") == b"3"
    assert 400 < db.ttl(b"at") <= 500


def test_keys_merge_segments_buffers_and_the_overlay(db, where):
    for i in range(300):
        db.put(b"u:%03d" % i, b"v")
    db.put(b"other", b"1")
    where()
    db.delete(b"u:005")
    db.put(b"u:500", b"new")

    def fn(tx):
        tx.delete(b"u:000")
        tx.put(b"u:999", b"1")
        return tx.keys(b"u:"), tx.keys()
    with_prefix, everything = db.transact(fn, [b"u:000"])
    want = sorted({b"u:%03d" % i for i in range(300)} - {b"u:000", b"u:005"}
                  | {b"u:500", b"u:999"})
    assert with_prefix == want
    assert everything == sorted(want + [b"other"])


def test_misuse(db):
    with pytest.raises(fusedb.InvalidArgumentError, match="transact"):
        db.transact(lambda tx: db.get(b"a"), [b"a"])
    with pytest.raises(fusedb.InvalidArgumentError):
        db.transact(42)
    with pytest.raises(fusedb.KeyTypeError):
        db.transact(lambda tx: None, [42])
    kept = []
    db.transact(kept.append, [b"a"])
    with pytest.raises(fusedb.ClosedError):
        kept[0].get(b"a")
    assert db.get(b"a") is None     # the database is usable after each
