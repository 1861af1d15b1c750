"""The public API: values, counters, TTLs, errors, the mapping protocol, batches."""

from __future__ import annotations

import pickle

import pytest

import fusedb
from fusedb import errors


def test_put_get_delete_roundtrip(db):
    db.put(b"user:1", b"alice")
    assert db.get(b"user:1") == b"alice"
    assert db.get("user:1") == b"alice"          # str keys are UTF-8
    db.put("ключ", b"x")
    assert db.get("ключ".encode()) == b"x"
    assert db.delete(b"user:1") is True
    assert db.get(b"user:1") is None
    assert db.get(b"user:1", b"dflt") == b"dflt"
    assert db.delete(b"user:1") is False


def test_empty_value_and_binary_bytes(db):
    db.put(b"e", b"")
    assert db.get(b"e") == b""
    assert b"e" in db
    blob = bytes(range(256))
    db.put(b"\x00\xff", blob)
    assert db.get(b"\x00\xff") == blob
    db.put(b"ba", bytearray(b"ba"))
    db.put(b"mv", memoryview(b"mv"))
    assert (db.get(b"ba"), db.get(b"mv")) == (b"ba", b"mv")


def test_mapping_protocol(db):
    db[b"k"] = b"v"
    assert db[b"k"] == b"v"
    del db[b"k"]
    with pytest.raises(KeyError):
        db[b"k"]
    with pytest.raises(KeyError):
        del db[b"k"]
    with pytest.raises(fusedb.FuseDBKeyError):
        db[b"missing"]


def test_incr_like_redis(db):
    assert db.incr(b"c") == 1
    assert db.incr(b"c", 10) == 11
    assert db.incr(b"c", -20) == -9
    assert db.decr(b"c") == -10
    assert db.get(b"c") == b"-10"
    db.put(b"s", b"41")
    assert db.incr(b"s") == 42
    assert db.get(b"s") == b"42"
    for bad in (b"abc", b" 1", b"1 ", b"+1", b"01", b"-0", b"1.5", b"", b"99999999999999999999"):
        db.put(b"bad", bad)
        with pytest.raises(fusedb.NotAnIntegerError):
            db.incr(b"bad")
        assert db.get(b"bad") == bad, "a failed incr changes nothing"


def test_incr_overflow(db):
    db.put(b"max", str(2**63 - 1).encode())
    with pytest.raises(fusedb.IntegerOverflowError):
        db.incr(b"max")
    assert db.get(b"max") == str(2**63 - 1).encode()
    assert db.incr(b"min", -(2**63)) == -(2**63)
    with pytest.raises(fusedb.IntegerOverflowError):
        db.incr(b"min", -1)
    with pytest.raises(OverflowError):
        db.incr(b"x", 2**63)


def test_incr_bad_delta_types(db):
    for bad in (1.0, "1", True, None):
        with pytest.raises(fusedb.ValueTypeError):
            db.incr(b"c", bad)


def test_ttl_with_injected_clock(db, clock):
    db.put(b"s", b"v", ttl=30)
    assert db.ttl(b"s") == pytest.approx(30)
    clock.advance(29.9)
    assert db.get(b"s") == b"v"
    clock.advance(0.2)
    assert db.get(b"s") is None, "expired keys are invisible at once"
    assert db.ttl(b"s") == fusedb.TTL_MISSING
    assert db.delete(b"s") is False
    assert list(db.scan()) == []


def test_expire_and_persist(db, clock):
    db.put(b"k", b"v")
    assert db.ttl(b"k") == fusedb.TTL_NONE
    assert db.expire(b"k", 5) is True
    assert db.ttl(b"k") == pytest.approx(5)
    assert db.expire(b"k", None) is True
    assert db.ttl(b"k") == fusedb.TTL_NONE
    assert db.expire(b"nope", 5) is False
    assert db.ttl(b"nope") == fusedb.TTL_MISSING


def test_incr_keeps_ttl_and_restarts_after_expiry(db, clock):
    assert db.incr(b"w") == 1
    db.expire(b"w", 60)
    assert db.incr(b"w") == 2
    assert db.ttl(b"w") == pytest.approx(60)
    clock.advance(61)
    assert db.incr(b"w") == 1, "an expired counter starts again from 0"
    assert db.ttl(b"w") == fusedb.TTL_NONE


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
def test_bad_ttl_values(db, ttl):
    with pytest.raises(fusedb.InvalidArgumentError):
        db.put(b"k", b"v", ttl=ttl)
    assert db.get(b"k") is None


def test_bad_ttl_type(db):
    with pytest.raises(fusedb.ValueTypeError):
        db.put(b"k", b"v", ttl="10")


@pytest.mark.parametrize("key", [1, 1.5, None, ["a"], object()])
def test_bad_key_types(db, key):
    with pytest.raises(fusedb.KeyTypeError):
        db.put(key, b"v")
    with pytest.raises(TypeError):
        db.get(key)


@pytest.mark.parametrize("value", ["str", 1, None, 2.0])
def test_bad_value_types(db, value):
    with pytest.raises(fusedb.ValueTypeError):
        db.put(b"k", value)


def test_size_limits(tmp_path):
    with fusedb.open(str(tmp_path / "d"), max_key_size=8, max_value_size=16) as db:
        db.put(b"k" * 8, b"v" * 16)
        with pytest.raises(fusedb.KeyTooLargeError):
            db.put(b"k" * 9, b"v")
        with pytest.raises(fusedb.KeyTooLargeError):
            db.put(b"", b"v")
        with pytest.raises(fusedb.ValueTooLargeError):
            db.put(b"k", b"v" * 17)
        with pytest.raises(ValueError):
            db.get(b"k" * 9)
        assert db.get(b"k" * 8) == b"v" * 16
        assert db.get(b"k") is None


def test_bad_options(tmp_path):
    with pytest.raises(fusedb.InvalidArgumentError):
        fusedb.open(str(tmp_path / "d"), buffer_bytes=4096, max_value_size=1 << 20)
    with pytest.raises(fusedb.InvalidArgumentError):
        fusedb.open(str(tmp_path / "d"), shards=0)
    with pytest.raises(TypeError):
        fusedb.open(str(tmp_path / "d"), no_such_option=1)


def test_closed_handle(tmp_path):
    db = fusedb.open(str(tmp_path / "d"))
    b = db.batch()
    db.close()
    db.close()  # idempotent
    for call in (lambda: db.put(b"k", b"v"), lambda: db.get(b"k"), lambda: db.incr(b"k"),
                 lambda: db.delete(b"k"), lambda: db.scan(), lambda: db.stats(),
                 lambda: db[b"k"], lambda: db.ttl(b"k"), lambda: db.expire(b"k", 1)):
        with pytest.raises(fusedb.ClosedError):
            call()
    b.put(b"k", b"v")
    with pytest.raises(fusedb.ClosedError):
        b.commit()


def test_second_open_of_same_directory_fails(tmp_path):
    with fusedb.open(str(tmp_path / "d")):
        with pytest.raises(fusedb.LockedError):
            fusedb.open(str(tmp_path / "d"))


def test_get_many(db):
    db.put(b"a", b"1")
    db.incr(b"b")
    assert db.get_many([b"a", b"b", b"c"]) == [b"1", b"1", None]


def test_batch_applies_all(db):
    db.put(b"gone", b"x")
    with db.batch() as b:
        b.put(b"a", b"1")
        b.incr(b"n", 5)
        b.incr(b"n", 2)
        b.put(b"t", b"v", ttl=10)
        b.delete(b"gone")
        b.expire(b"a", 100)
    assert b.results == [None, 5, 7, None, True, True]
    assert db.get(b"a") == b"1" and db.ttl(b"a") == pytest.approx(100)
    assert db.get(b"n") == b"7"
    assert db.get(b"gone") is None
    assert db.ttl(b"t") == pytest.approx(10)


def test_batch_with_failing_incr_writes_nothing(db):
    db.put(b"text", b"hello")
    with pytest.raises(fusedb.NotAnIntegerError):
        with db.batch() as b:
            b.put(b"a", b"1")
            b.incr(b"text")
    assert db.get(b"a") is None
    assert db.get(b"text") == b"hello"


def test_batch_discarded_on_exception(db):
    with pytest.raises(RuntimeError):
        with db.batch() as b:
            b.put(b"a", b"1")
            raise RuntimeError("boom")
    assert db.get(b"a") is None
    with pytest.raises(fusedb.ClosedError):
        b.put(b"x", b"y")


def test_batch_validates_eagerly(db):
    b = db.batch()
    with pytest.raises(fusedb.KeyTypeError):
        b.put(1, b"v")
    with pytest.raises(fusedb.ValueTooLargeError):
        b.put(b"k", b"v" * (1 << 20))


def test_batch_larger_than_a_buffer_is_refused_whole(tiny):
    with pytest.raises(fusedb.InvalidArgumentError):
        with tiny.batch() as b:
            for i in range(40):
                b.put(b"k%03d" % i, b"v" * 100)
    assert list(tiny.scan()) == []


def test_errors_pickle_and_inherit():
    e = errors.CorruptionError("bad", "/x", 12)
    e2 = pickle.loads(pickle.dumps(e))
    assert (str(e2), e2.path, e2.offset) == ("bad", "/x", 12)
    assert issubclass(fusedb.FuseDBKeyError, KeyError)
    assert issubclass(fusedb.KeyTypeError, TypeError)
    assert issubclass(fusedb.IntegerOverflowError, OverflowError)
    for cls in (fusedb.KeyTooLargeError, fusedb.NotAnIntegerError, fusedb.WriteStallError):
        assert issubclass(cls, fusedb.FuseDBError)
        assert pickle.loads(pickle.dumps(cls("m"))).args == ("m",)


def test_stats_shape(tiny):
    for i in range(300):
        tiny.put(b"k%04d" % i, b"v" * 50)
    s = tiny.stats()
    for field in ("leaves", "segments", "merges", "splits", "segment_bytes_written",
                  "buffer_fill", "arena_slabs_used", "arena_slabs_total", "write_amplification"):
        assert field in s
    assert s["buffer_freezes"] > 0
    assert s["logical_bytes_written"] == 300 * (5 + 50)


# -- update(): atomic read-modify-write under the key's shard lock ----------------------

def _plus_one(v: bytes | None) -> bytes:
    return b"%d" % (int(v or b"0") + 1)


def test_update_of_a_missing_key(db):
    seen = []
    assert db.update(b"u", lambda v: seen.append(v) or b"x") == b"x"
    assert seen == [None]
    assert db.get(b"u") == b"x"
    assert db.ttl(b"u") == fusedb.TTL_NONE
    assert db.update(b"gone", lambda v: None) is None     # stays missing
    assert b"gone" not in db
    assert db.update("str-key", lambda v: bytearray(b"ba")) == b"ba"
    assert db.get(b"str-key") == b"ba"


def test_update_sees_a_counter_as_ascii(db):
    db.incr(b"c", 41)
    seen = []
    assert db.update(b"c", lambda v: seen.append(v) or _plus_one(v)) == b"42"
    assert seen == [b"41"]
    assert db.get(b"c") == b"42"
    assert db.incr(b"c") == 43          # the stored decimal still counts
    db.incr(b"neg", -5)
    assert db.update(b"neg", _plus_one) == b"-4"


def test_update_keeps_or_sets_the_ttl(db, clock):
    db.put(b"t", b"a", ttl=10)
    assert db.update(b"t", lambda v: v + b"b") == b"ab"
    assert db.ttl(b"t") == 10.0
    db.incr(b"ct")
    db.expire(b"ct", 5)
    db.update(b"ct", _plus_one)
    assert (db.get(b"ct"), db.ttl(b"ct")) == (b"2", 5.0)
    assert db.update(b"t", lambda v: v, ttl=100) == b"ab"
    assert db.ttl(b"t") == 100.0
    db.update(b"new", lambda v: b"n", ttl=7)
    assert db.ttl(b"new") == 7.0
    clock.advance(101)
    seen = []
    assert db.update(b"t", lambda v: seen.append(v) or b"again") == b"again"
    assert seen == [None]                        # expired reads as missing
    assert db.ttl(b"t") == fusedb.TTL_NONE       # a new value: no TTL left over
    with pytest.raises(fusedb.InvalidArgumentError):
        db.update(b"t", lambda v: b"x", ttl=0)
    with pytest.raises(fusedb.ValueTypeError):
        db.update(b"t", lambda v: b"x", ttl="1")
    assert db.get(b"t") == b"again"


def test_update_whose_function_raises_writes_nothing(db):
    db.put(b"k", b"v", ttl=50)
    boom = RuntimeError("boom")

    def fail(v):
        raise boom
    with pytest.raises(RuntimeError) as e:
        db.update(b"k", fail)
    assert e.value is boom                      # propagated unchanged
    with pytest.raises(RuntimeError):
        db.update(b"missing", fail)
    assert (db.get(b"k"), db.ttl(b"k")) == (b"v", 50.0)
    assert b"missing" not in db
    db.put(b"k2", b"still")                     # the lock was released
    assert db.get(b"k2") == b"still"


def test_update_returning_none_deletes(db):
    db.put(b"k", b"v")
    assert db.update(b"k", lambda v: None) is None
    assert db.get(b"k") is None
    assert db.ttl(b"k") == fusedb.TTL_MISSING
    assert db.delete(b"k") is False


def test_update_returning_a_bad_value_writes_nothing(tmp_path):
    with fusedb.open(str(tmp_path / "d"), max_value_size=100) as db:
        db.put(b"k", b"v")
        for bad in ("text", 1, [b"x"], True):
            with pytest.raises(fusedb.ValueTypeError):
                db.update(b"k", lambda v, bad=bad: bad)
        with pytest.raises(fusedb.ValueTooLargeError):
            db.update(b"k", lambda v: b"x" * 101)
        with pytest.raises(fusedb.ValueTooLargeError):
            db.update(b"new", lambda v: b"x" * 101)
        assert db.get(b"k") == b"v"
        assert b"new" not in db
        assert db.update(b"k", lambda v: b"x" * 100) == b"x" * 100


def test_update_in_a_batch_sees_the_batch(db):
    db.put(b"a", b"1")
    with db.batch() as b:
        b.incr(b"a", 4)
        b.update(b"a", _plus_one)
        b.update(b"z", lambda v: None)
        b.update(b"y", lambda v: b"Y", ttl=3)
    assert b.results == [5, b"6", None, b"Y"]
    assert (db.get(b"a"), db.get(b"y"), db.ttl(b"y")) == (b"6", b"Y", 3.0)

    def fail(v):
        raise KeyError("nope")
    with pytest.raises(KeyError):
        with db.batch() as b:
            b.put(b"a", b"lost")
            b.update(b"a", fail)
    assert db.get(b"a") == b"6"


def test_update_is_atomic_across_threads(db):
    import threading
    n, m = 4, 300

    def work(i):
        for _ in range(m):
            if i % 2:
                db.update(b"n", _plus_one)
            else:
                db.incr(b"n")
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.get(b"n") == b"%d" % (n * m)


def _update_in_child(path: str, keys: list[bytes], m: int) -> None:
    with fusedb.connect(path) as db:
        for _ in range(m):
            for k in keys:
                db.update(k, _plus_one)


def test_update_is_atomic_across_processes(tmp_path):
    import multiprocessing
    path = str(tmp_path / "d")
    keys = [b"p%d" % i for i in range(8)]
    m = 150
    with fusedb.open(path, shards=2) as db:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_update_in_child, args=(path, keys, m)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        assert [db.get(k) for k in keys] == [b"%d" % (2 * m)] * len(keys)
