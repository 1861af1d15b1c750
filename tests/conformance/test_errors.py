"""Every documented error (README, "Errors"), its builtin base class, and that a
failing call changes nothing."""

from __future__ import annotations

import math

import pytest

import fusedb

BAD_KEYS = [1, None, 1.5, ["k"], object()]
BAD_VALUES = ["str", 1, None, ["v"]]
BAD_TTL_TYPES = ["1", True, [1]]
BAD_TTL_VALUES = [0, -1, -0.5, math.nan, math.inf, -math.inf]


def test_the_hierarchy():
    E = fusedb
    for cls, base in [(E.KeyTypeError, TypeError), (E.ValueTypeError, TypeError),
                      (E.KeyTooLargeError, ValueError), (E.ValueTooLargeError, ValueError),
                      (E.InvalidArgumentError, ValueError), (E.NotAnIntegerError, ValueError),
                      (E.IntegerOverflowError, OverflowError), (E.FuseDBKeyError, KeyError),
                      (E.DiskError, OSError), (E.SharedMemoryError, OSError),
                      (E.NotADatabaseError, E.InvalidArgumentError)]:
        assert issubclass(cls, base) and issubclass(cls, E.FuseDBError)
    for cls in (E.ClosedError, E.WriteStallError, E.CorruptionError, E.LockedError,
                E.NotRunningError, E.LockTimeoutError, E.ForkedError):
        assert issubclass(cls, E.FuseDBError)


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_key_type(db, key):
    for call in (lambda: db.put(key, b"v"), lambda: db.get(key), lambda: db.delete(key),
                 lambda: db.incr(key), lambda: db.decr(key), lambda: db.expire(key, 1),
                 lambda: db.ttl(key), lambda: db.get_many([b"ok", key]),
                 lambda: db[key], lambda: key in db):
        with pytest.raises(fusedb.KeyTypeError):
            call()
    for kw in ("start", "stop", "prefix"):
        if key is not None:                     # None is a valid bound
            with pytest.raises(fusedb.KeyTypeError):
                list(db.scan(**{kw: key}))
    assert dict(db.scan()) == {}


@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
def test_value_type(db, value):
    db.put(b"k", b"old")
    with pytest.raises(fusedb.ValueTypeError):
        db.put(b"k", value)
    with pytest.raises(TypeError):
        db[b"k"] = value
    assert db.get(b"k") == b"old"


def test_delta_and_ttl_types(db):
    db.put(b"k", b"5")
    for delta in (1.0, "1", True, None):
        with pytest.raises(fusedb.ValueTypeError):
            db.incr(b"k", delta)
        with pytest.raises(fusedb.ValueTypeError):
            db.decr(b"k", delta)
    for ttl in BAD_TTL_TYPES:
        with pytest.raises(fusedb.ValueTypeError):
            db.put(b"k", b"new", ttl=ttl)
        with pytest.raises(fusedb.ValueTypeError):
            db.expire(b"k", ttl)
    assert db.get(b"k") == b"5" and db.ttl(b"k") == fusedb.TTL_NONE


def test_ttl_values(db):
    db.put(b"k", b"v")
    for ttl in BAD_TTL_VALUES:
        with pytest.raises(fusedb.InvalidArgumentError):
            db.put(b"k", b"new", ttl=ttl)
        with pytest.raises(fusedb.InvalidArgumentError):
            db.expire(b"k", ttl)
    assert db.get(b"k") == b"v" and db.ttl(b"k") == fusedb.TTL_NONE


def test_key_and_value_sizes(db, access):
    mk, mv = access.opts["max_key_size"], access.opts["max_value_size"]
    for key in (b"", "", b"k" * (mk + 1), "é" * (mk // 2 + 1)):
        for call in (lambda key=key: db.put(key, b"v"), lambda key=key: db.get(key),
                     lambda key=key: db.delete(key), lambda key=key: db.incr(key),
                     lambda key=key: db.expire(key, 1), lambda key=key: db.ttl(key)):
            with pytest.raises(fusedb.KeyTooLargeError):
                call()
    db.put(b"k", b"old")
    with pytest.raises(fusedb.ValueTooLargeError):
        db.put(b"k", b"v" * (mv + 1))
    with pytest.raises(ValueError):
        db.put(b"k", bytearray(mv + 1))
    assert db.get(b"k") == b"old"
    assert dict(db.scan()) == {b"k": b"old"}


@pytest.mark.parametrize("stored", [b"abc", b"", b"01", b"+1", b" 1", b"1 ", b"1.5", b"-0",
                                    b"--1", b"9223372036854775808", b"-9223372036854775809",
                                    b"\x001"])
def test_not_an_integer(db, stored):
    db.put(b"k", stored, ttl=100)
    with pytest.raises(fusedb.NotAnIntegerError):
        db.incr(b"k")
    with pytest.raises(ValueError):
        db.decr(b"k", 2)
    assert db.get(b"k") == stored and 99 <= db.ttl(b"k") <= 100


def test_overflow(db):
    top, bottom = 2 ** 63 - 1, -(2 ** 63)
    assert db.incr(b"hi", top) == top
    with pytest.raises(fusedb.IntegerOverflowError):
        db.incr(b"hi")
    assert db.incr(b"lo", bottom) == bottom
    with pytest.raises(OverflowError):
        db.decr(b"lo")
    with pytest.raises(fusedb.IntegerOverflowError):
        db.incr(b"hi", bottom - 1)            # the delta itself is outside 64 bits
    with pytest.raises(fusedb.IntegerOverflowError):
        db.incr(b"new", top + 1)
    with pytest.raises(fusedb.IntegerOverflowError):
        db.decr(b"new", -bottom + 1)
    assert db.get(b"hi") == b"%d" % top and db.get(b"lo") == b"%d" % bottom
    assert db.get(b"new") is None


def test_scan_arguments(db):
    for kwargs in (dict(limit=-1), dict(limit=1.5), dict(limit=True), dict(limit="2"),
                   dict(reverse="x"), dict(reverse=1),
                   dict(prefix=b"a", start=b"a"), dict(prefix=b"a", stop=b"b")):
        with pytest.raises(fusedb.InvalidArgumentError):
            list(db.scan(**kwargs))


def test_bad_open_options(tmp_path):
    for opts in (dict(max_key_size=0), dict(max_key_size=5000), dict(buffer_bytes=1000),
                 dict(durability="maybe"), dict(mode="cluster"), dict(lock_timeout=-1),
                 dict(clock=5), dict(no_such_option=1)):
        with pytest.raises((fusedb.InvalidArgumentError, TypeError)):
            fusedb.open(str(tmp_path / "db"), **opts)
    assert not (tmp_path / "db").exists() or not any((tmp_path / "db").iterdir())


def test_not_a_database(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("mine")
    with pytest.raises(fusedb.NotADatabaseError):
        fusedb.open(str(tmp_path / "other"))
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["file.txt"]


def test_closed_handle(fresh):
    db = fresh().db
    db.put(b"k", b"v")
    b = db.batch()
    db.close()
    db.close()                                  # idempotent
    assert db.closed
    for call in (lambda: db.put(b"k", b"v"), lambda: db.get(b"k"), lambda: db.delete(b"k"),
                 lambda: db.incr(b"k"), lambda: db.decr(b"k"), lambda: db.expire(b"k", 1),
                 lambda: db.ttl(b"k"), lambda: db.get_many([b"k"]), lambda: db[b"k"],
                 lambda: db.__setitem__(b"k", b"v"), lambda: db.__delitem__(b"k"),
                 lambda: b"k" in db, lambda: list(db.scan()), lambda: db.batch(),
                 lambda: db.flush(), lambda: db.stats(), b.commit):
        with pytest.raises(fusedb.ClosedError):
            call()


@pytest.mark.parametrize("reverse", [False, True])
def test_a_scan_read_after_close_raises_closed_error(fresh, reverse):
    """An iterator made before close() and read after it: ClosedError, not a
    read of unmapped segment memory (ValueError) nor more keys."""
    db = fresh().db
    for i in range(600):
        db.put(b"s%04d" % i, b"v")
    db.flush()                                  # in segments: mapped files
    for i in range(600, 700):
        db.put(b"s%04d" % i, b"v")              # and in buffers
    it = db.scan(reverse=reverse)
    assert next(it)[0] == (b"s0699" if reverse else b"s0000")
    db.close()
    with pytest.raises(fusedb.ClosedError):
        next(it)


def test_closed_error_in_a_client_once_the_owner_closed(fresh, access):
    """README: an attached process gets ClosedError once the router closed."""
    if not hasattr(access, "stop_server"):
        pytest.skip("only an attached handle outlives its database's owner")
    m = fresh()
    m.db.put(b"k", b"v")
    m.stop_server()
    with pytest.raises(fusedb.ClosedError):
        m.db.get(b"k")


def test_a_second_open_is_refused(db, access):
    db.put(b"k", b"v")
    with pytest.raises(fusedb.LockedError):
        fusedb.open(access.path, **access.opts)
    assert db.get(b"k") == b"v"


def test_connect(db, access):
    """connect attaches to a multiprocess database (any handle sees the other's
    writes) and raises NotRunningError for an embedded one."""
    db.put(b"k", b"v")
    if access.role == "embedded":
        with pytest.raises(fusedb.NotRunningError):
            fusedb.connect(access.path)
        return
    other = fusedb.connect(access.path)
    try:
        assert other.get(b"k") == b"v"
        other.put(b"\x90o", b"w")
        assert db.get(b"\x90o") == b"w"
    finally:
        other.close()                   # detaches only
    assert db.get(b"k") == b"v"
