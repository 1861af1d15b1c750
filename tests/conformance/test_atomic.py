"""The atomic commands (README, "API"): put with nx / xx / keepttl / get, add,
incr with a TTL on creation and xx, getdel, getex, touch, and update's
"returned the same object: nothing written" rule; alone, in batches, and on
keys whose entries sit in segments (after a flush). Semantics as Redis's SET,
GETDEL, GETEX (redis.io/commands/set, /getdel, /getex) unless README says so."""

from __future__ import annotations

import pytest

import fusedb

#: A TTL that must not run out during a test's checks (real clock modes too).
T = 1.0
LONG = 1000.0


def written(db) -> int:
    """Bytes written so far (keys and values): unchanged means nothing written."""
    return db.stats()["logical_bytes_written"]


def close_to(got: float, want: float) -> bool:
    """A TTL read some time after it was set (real clock) or at once (fake)."""
    return want - 0.5 <= got <= want + 1e-6


@pytest.fixture(params=["buffer", "segment"])
def where(request, db):
    """Run each test twice: entries in the buffers, and in segments (flushed
    before the command: the read goes to segment files)."""
    return (lambda: db.flush()) if request.param == "segment" else (lambda: None)


def test_put_nx_xx(db, where):
    assert db.put(b"a", b"1", nx=True) is True
    where()
    assert db.put(b"a", b"2", nx=True) is False
    assert db.get(b"a") == b"1"
    assert db.put(b"a", b"3", xx=True) is True
    assert db.get(b"a") == b"3"
    assert db.put(b"new", b"x", xx=True) is False
    assert db.get(b"new") is None
    db.incr(b"n", 5)
    where()
    assert db.put(b"n", b"v", nx=True) is False and db.get(b"n") == b"5"


def test_put_nx_counts_deleted_and_expired_keys_as_absent(db, access, where):
    db.put(b"d", b"old")
    db.delete(b"d")
    db.put(b"e", b"old", ttl=T)
    where()
    access.advance(T + 0.1)
    assert db.put(b"d", b"new", nx=True) is True
    assert db.put(b"e", b"new", xx=True) is False
    assert db.put(b"e", b"new", nx=True) is True
    assert db.get(b"d") == b"new" and db.get(b"e") == b"new"
    assert db.ttl(b"e") == fusedb.TTL_NONE


def test_put_get_returns_the_old_value(db, where):
    assert db.put(b"g", b"1", get=True) is None
    where()
    assert db.put(b"g", b"2", get=True) == b"1"
    db.incr(b"c", 7)
    where()
    assert db.put(b"c", b"v", get=True) == b"7"          # a counter reads as decimal
    # With nx the old value comes back whether or not it stored (Redis >= 7.0).
    assert db.put(b"g", b"3", nx=True, get=True) == b"2"
    assert db.get(b"g") == b"2"
    assert db.put(b"fresh", b"f", nx=True, get=True) is None
    assert db.get(b"fresh") == b"f"
    assert db.put(b"none", b"x", xx=True, get=True) is None
    assert db.get(b"none") is None


def test_put_keepttl_and_ttl_discarded_by_default(db, where):
    db.put(b"k", b"1", ttl=LONG)
    where()
    assert db.put(b"k", b"2", keepttl=True) is None
    assert db.get(b"k") == b"2" and close_to(db.ttl(b"k"), LONG)
    db.put(b"k", b"3")                                   # a plain put drops the TTL
    assert db.ttl(b"k") == fusedb.TTL_NONE
    db.put(b"k2", b"1", keepttl=True)                    # a new key gets none
    assert db.ttl(b"k2") == fusedb.TTL_NONE
    db.put(b"k3", b"1", ttl=LONG)
    assert db.put(b"k3", b"2", xx=True, keepttl=True) is True
    assert close_to(db.ttl(b"k3"), LONG)


def test_put_refused_combinations_write_nothing(db):
    db.put(b"x", b"1")
    before = written(db)
    with pytest.raises(fusedb.InvalidArgumentError):
        db.put(b"x", b"2", nx=True, xx=True)
    with pytest.raises(fusedb.InvalidArgumentError):
        db.put(b"x", b"2", ttl=5, keepttl=True)
    with pytest.raises(fusedb.InvalidArgumentError):
        db.put(b"x", b"2", ttl=-1, nx=True)
    with pytest.raises(fusedb.ValueTypeError):
        db.put(b"x", 12, xx=True)
    with pytest.raises(fusedb.KeyTypeError):
        db.put(12, b"v", get=True)
    assert db.get(b"x") == b"1" and written(db) == before


def test_conditions_not_met_write_nothing(db):
    db.put(b"x", b"1")
    before = written(db)
    assert db.put(b"x", b"2", nx=True) is False
    assert db.put(b"y", b"2", xx=True) is False
    assert db.add(b"x", b"2") is False
    assert db.getdel(b"y") is None
    assert db.getex(b"y", 5) is None
    assert db.touch(b"y", 5) is False
    assert db.incr(b"y", 1, xx=True) is None
    assert db.update(b"x", lambda v: v) == b"1"
    assert written(db) == before
    assert db.get(b"y") is None


def test_add(db, access, where):
    assert db.add(b"a", b"1") is True
    where()
    assert db.add(b"a", b"2") is False and db.get(b"a") == b"1"
    assert db.add(b"t", b"v", ttl=T) is True
    assert 0 < db.ttl(b"t") <= T
    access.advance(T + 0.1)
    assert db.add(b"t", b"again") is True
    assert db.get(b"t") == b"again" and db.ttl(b"t") == fusedb.TTL_NONE


def test_incr_ttl_only_on_creation(db, access, where):
    assert db.incr(b"w", 1, ttl=T) == 1
    where()
    assert 0 < db.ttl(b"w") <= T
    assert db.incr(b"w", 1, ttl=LONG) == 2                # a live key keeps its TTL
    assert db.ttl(b"w") <= T
    assert db.decr(b"w", 1, ttl=LONG) == 1
    assert db.ttl(b"w") <= T
    access.advance(T + 0.1)
    assert db.get(b"w") is None
    assert db.incr(b"w", 5, ttl=LONG) == 5                # expired: created again
    assert close_to(db.ttl(b"w"), LONG)
    db.incr(b"forever", 1)
    where()
    assert db.incr(b"forever", 1, ttl=T) == 2             # live without TTL: none set
    assert db.ttl(b"forever") == fusedb.TTL_NONE
    db.put(b"dec", b"41")
    assert db.incr(b"dec", 1, ttl=T) == 42                # a decimal value is live
    assert db.ttl(b"dec") == fusedb.TTL_NONE


def test_incr_ttl_fixed_window(db, access):
    """The fixed-window rate limit in one call per hit: the first hit of a window
    opens it; hits count until the window expires; the next hit opens a new one."""
    hits = [db.incr(b"rl:ip", 1, ttl=T) for _ in range(5)]
    assert hits == [1, 2, 3, 4, 5]
    access.advance(T + 0.1)
    assert db.incr(b"rl:ip", 1, ttl=T) == 1


def test_incr_xx(db, access, where):
    assert db.incr(b"m", 1, xx=True) is None
    assert b"m" not in db
    db.incr(b"m", 3)
    where()
    assert db.incr(b"m", 2, xx=True) == 5
    assert db.decr(b"m", 1, xx=True) == 4
    db.put(b"s", b"text")
    with pytest.raises(fusedb.NotAnIntegerError):
        db.incr(b"s", 1, xx=True)
    db.incr(b"e", 1, ttl=T)
    access.advance(T + 0.1)
    assert db.incr(b"e", 1, xx=True) is None and b"e" not in db


def test_incr_argument_errors(db):
    with pytest.raises(fusedb.ValueTypeError):
        db.incr(b"n", 1, ttl="60")
    with pytest.raises(fusedb.InvalidArgumentError):
        db.incr(b"n", 1, ttl=0)
    with pytest.raises(fusedb.InvalidArgumentError):
        db.incr(b"n", 1, ttl=float("inf"), xx=True)
    with pytest.raises(fusedb.IntegerOverflowError):
        db.incr(b"n", 2 ** 63, ttl=5)
    assert b"n" not in db
    db.incr(b"big", 2 ** 63 - 1)
    with pytest.raises(fusedb.IntegerOverflowError):
        db.incr(b"big", 1, xx=True)
    assert db.get(b"big") == b"%d" % (2 ** 63 - 1)


def test_getdel(db, where):
    db.put(b"g", b"v", ttl=LONG)
    db.incr(b"c", 9)
    where()
    assert db.getdel(b"g") == b"v"
    assert db.get(b"g") is None and db.ttl(b"g") == fusedb.TTL_MISSING
    assert db.getdel(b"g") is None
    assert db.getdel(b"c") == b"9" and b"c" not in db
    assert db.getdel(b"never") is None


def test_getex(db, access, where):
    db.put(b"x", b"v")
    db.incr(b"c", 2)
    where()
    assert db.getex(b"x", LONG) == b"v"
    assert close_to(db.ttl(b"x"), LONG)
    assert db.getex(b"x", None) == b"v"                  # PERSIST
    assert db.ttl(b"x") == fusedb.TTL_NONE
    assert db.getex(b"c", T) == b"2"
    assert db.incr(b"c") == 3                            # still a counter, TTL kept
    assert 0 < db.ttl(b"c") <= T
    access.advance(T + 0.1)
    assert db.getex(b"c", LONG) is None and b"c" not in db
    with pytest.raises(fusedb.InvalidArgumentError):
        db.getex(b"x", -1)
    with pytest.raises(fusedb.ValueTypeError):
        db.getex(b"x", "1")
    assert db.ttl(b"x") == fusedb.TTL_NONE


def test_touch(db, access, where):
    db.put(b"t", b"v", ttl=T)
    where()
    assert db.touch(b"t", LONG) is True
    access.advance(T + 0.1)
    assert db.get(b"t") == b"v" and close_to(db.ttl(b"t"), LONG - T - 0.1)
    assert db.touch(b"t", None) is True and db.ttl(b"t") == fusedb.TTL_NONE
    assert db.touch(b"missing", 5) is False and b"missing" not in db


def test_update_returning_the_same_object_writes_nothing(db, where):
    db.put(b"u", b"v", ttl=LONG)
    where()
    before = written(db)
    assert db.update(b"u", lambda v: v) == b"v"
    assert db.update(b"absent", lambda v: v) is None
    assert written(db) == before and b"absent" not in db
    assert close_to(db.ttl(b"u"), LONG)
    # With a ttl it is a write: the new TTL is stored.
    assert db.update(b"u", lambda v: v, ttl=5) == b"v"
    assert 0 < db.ttl(b"u") <= 5
    # An equal but new object is a write too (same bytes stored again).
    before = written(db)
    assert db.update(b"u", lambda v: bytes(bytearray(v))) == b"v"
    assert written(db) > before


def test_commands_in_a_batch(db, where):
    db.put(b"a", b"1")
    db.incr(b"n", 1)
    db.put(b"t", b"v")
    where()
    with db.batch() as b:
        b.put(b"a", b"2", nx=True)
        b.put(b"a", b"3", xx=True, get=True)
        b.add(b"b", b"new")
        b.incr(b"w", 1, ttl=LONG)
        b.incr(b"w", 1, ttl=T)           # sees the batch's own creation: keeps LONG
        b.incr(b"zz", 1, xx=True)
        b.getdel(b"n")
        b.getex(b"t", LONG)
        b.touch(b"b", LONG)
        b.put(b"k", b"x", keepttl=True)
    assert b.results == [False, b"1", True, 1, 2, None, b"1", b"v", True, None]
    assert db.get(b"a") == b"3" and db.get(b"b") == b"new" and db.get(b"w") == b"2"
    assert b"n" not in db and b"zz" not in db and db.get(b"k") == b"x"
    for k in (b"w", b"t", b"b"):
        assert close_to(db.ttl(k), LONG)


def test_a_failing_batch_applies_none_of_the_commands(db):
    db.put(b"s", b"text")
    db.put(b"g", b"v")
    with pytest.raises(fusedb.NotAnIntegerError):
        with db.batch() as b:
            b.getdel(b"g")
            b.add(b"new", b"1")
            b.incr(b"s", 1, ttl=5)
    assert db.get(b"g") == b"v" and b"new" not in db
    with db.batch() as b:
        with pytest.raises(fusedb.InvalidArgumentError):
            b.put(b"x", b"1", nx=True, xx=True)
        with pytest.raises(fusedb.InvalidArgumentError):
            b.incr(b"x", 1, ttl=0)
    assert b.results == [] and b"x" not in db


# -- review additions (issue 13 review) ------------------------------------------------


def test_incr_ttl_on_a_deleted_key_creates_it_with_the_ttl(db, where):
    """A tombstone, in the buffers or in a segment, counts as missing: the
    compiled kernel's KIND_DEL branch and the pure path's alike."""
    db.incr(b"d", 5)
    db.put(b"dv", b"41", ttl=LONG)
    where()
    db.delete(b"d")
    db.delete(b"dv")
    where()
    assert db.incr(b"d", 2, ttl=LONG) == 2
    assert close_to(db.ttl(b"d"), LONG)
    assert db.decr(b"dv", 1, ttl=LONG) == -1
    assert close_to(db.ttl(b"dv"), LONG)


def test_incr_xx_with_a_ttl_is_refused(db, where):
    """xx never creates the key and a ttl applies only to a key incr creates:
    both together is a mistake, refused before anything is written."""
    db.incr(b"x", 1)
    where()
    for ttl in (1, 5.0):
        with pytest.raises(fusedb.InvalidArgumentError):
            db.incr(b"x", 1, ttl=ttl, xx=True)
        with pytest.raises(fusedb.InvalidArgumentError):
            db.decr(b"absent", 1, ttl=ttl, xx=True)
    assert db.get(b"x") == b"1" and db.ttl(b"x") == fusedb.TTL_NONE and b"absent" not in db


def test_options_are_bools(db):
    """An option that is not a bool is a ValueTypeError, not a truthy guess."""
    db.put(b"x", b"1")
    for bad in ("yes", "no", 1, [True]):
        for name in ("nx", "xx", "keepttl", "get"):
            with pytest.raises(fusedb.ValueTypeError):
                db.put(b"x", b"2", **{name: bad})
            with pytest.raises(fusedb.ValueTypeError):
                with db.batch() as b:
                    b.put(b"x", b"2", **{name: bad})
        with pytest.raises(fusedb.ValueTypeError):
            db.incr(b"n", 1, xx=bad)
    assert db.get(b"x") == b"1" and b"n" not in db


def test_put_options_on_an_expired_key(db, access, where):
    """An expired key is absent for get and nx, and keepttl has nothing to keep."""
    for k in (b"g", b"n", b"k", b"c"):
        db.put(k, b"old", ttl=T)
    db.incr(b"cnt", 3, ttl=T)
    where()
    access.advance(T + 0.1)
    assert db.put(b"g", b"new", get=True) is None
    assert db.put(b"n", b"new", nx=True, get=True) is None and db.get(b"n") == b"new"
    assert db.put(b"k", b"new", keepttl=True) is None
    assert db.ttl(b"k") == fusedb.TTL_NONE
    assert db.put(b"c", b"new", xx=True, get=True) is None and b"c" not in db
    assert db.put(b"cnt", b"v", xx=True) is False and b"cnt" not in db


def test_put_keepttl_on_a_counter(db, where):
    """A live counter's TTL is kept; the key becomes a value (incr parses it)."""
    db.incr(b"c", 7, ttl=LONG)
    where()
    assert db.put(b"c", b"40", keepttl=True, get=True) == b"7"
    assert db.get(b"c") == b"40" and close_to(db.ttl(b"c"), LONG)
    assert db.incr(b"c", 2) == 42 and close_to(db.ttl(b"c"), LONG)


def test_getex_and_touch_keep_a_counter_a_counter(db, where):
    db.incr(b"c", 1)
    where()
    assert db.getex(b"c", LONG) == b"1"
    assert db.touch(b"c", None) is True
    assert db.incr(b"c", 1) == 2 and db.ttl(b"c") == fusedb.TTL_NONE
    assert db.update(b"c", lambda v: v) == b"2"          # nothing written: still 2
    assert db.incr(b"c", 1) == 3


def test_batch_refuses_bad_arguments_as_the_database_does(db):
    """Each refused op raises the database's error class when it is added and
    is not part of the batch; the rest of the batch applies."""
    bad = [
        (fusedb.InvalidArgumentError, lambda b: b.put(b"x", b"1", ttl=5, keepttl=True)),
        (fusedb.InvalidArgumentError, lambda b: b.add(b"x", b"1", ttl=0)),
        (fusedb.ValueTypeError, lambda b: b.add(b"x", b"1", ttl="5")),
        (fusedb.ValueTypeError, lambda b: b.incr(b"x", 1, ttl=True)),
        (fusedb.InvalidArgumentError, lambda b: b.incr(b"x", 1, ttl=float("nan"))),
        (fusedb.InvalidArgumentError, lambda b: b.getex(b"x", -1)),
        (fusedb.ValueTypeError, lambda b: b.touch(b"x", "1")),
        (fusedb.KeyTypeError, lambda b: b.getdel(12)),
        (fusedb.ValueTypeError, lambda b: b.put(b"x", "text", nx=True)),
    ]
    for cls, call in bad:
        with pytest.raises(cls):
            call(db)                   # the database refuses it too ...
    with db.batch() as b:
        for cls, call in bad:
            with pytest.raises(cls):
                call(b)                # ... and so does a batch, when it is added
        b.add(b"ok", b"1")
    assert b.results == [True]
    assert b"x" not in db and db.get(b"ok") == b"1"


def test_batch_incr_ttl_on_creation_against_a_live_and_an_expired_key(db, access, where):
    db.incr(b"live", 1)
    db.incr(b"old", 1, ttl=T)
    where()
    access.advance(T + 0.1)
    with db.batch() as b:
        b.incr(b"live", 1, ttl=T)
        b.incr(b"old", 1, ttl=LONG)
        b.getdel(b"live")
        b.incr(b"live", 5, ttl=LONG)            # deleted earlier in the batch: created
    assert b.results == [2, 1, b"2", 5]
    assert close_to(db.ttl(b"old"), LONG) and close_to(db.ttl(b"live"), LONG)
