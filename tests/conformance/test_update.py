"""``db.update(key, fn, ttl=None) -> bytes | None``: fn(current) runs under the
key's shard lock with the live value (a counter as ASCII decimal) or None and
returns the bytes to store, or None to delete; ttl=None keeps an existing TTL,
a number sets it; returns what was stored. If fn raises, nothing is written and
the exception propagates; a non-bytes result is ValueTypeError."""

from __future__ import annotations

import threading

import pytest

import fusedb



def test_update_creates_changes_and_returns_what_was_stored(db):
    seen = []

    def fn(cur):
        seen.append(cur)
        return (cur or b"") + b"x"
    assert db.update(b"u", fn) == b"x"
    assert db.update(b"u", fn) == b"xx"
    assert seen == [None, b"x"]
    assert db.get(b"u") == b"xx"
    assert db.update("u", lambda cur: bytearray(cur + b"!")) == b"xx!"   # str key, bytes-like


def test_a_counter_reads_as_ascii_decimal(db):
    db.incr(b"c", 41)
    assert db.update(b"c", lambda cur: b"%d" % (int(cur) + 1)) == b"42"
    assert db.incr(b"c") == 43


def test_none_deletes(db):
    db.put(b"d", b"v")
    assert db.update(b"d", lambda cur: None) is None
    assert db.get(b"d") is None and b"d" not in db
    assert db.update(b"never", lambda cur: None) is None
    assert db.get(b"never") is None


def test_ttl_none_keeps_a_number_sets(db, access):
    db.put(b"t", b"v", ttl=50)
    db.update(b"t", lambda cur: b"w")
    assert 49 <= db.ttl(b"t") <= 50
    db.update(b"t", lambda cur: b"w2", ttl=10)
    assert 9 <= db.ttl(b"t") <= 10
    db.update(b"new", lambda cur: b"n")
    assert db.ttl(b"new") == fusedb.TTL_NONE
    db.update(b"short", lambda cur: b"s", ttl=1.0)
    access.advance(1.1)
    assert db.get(b"short") is None
    assert db.update(b"short", lambda cur: b"seen %r" % (cur,)) == b"seen None"  # expired: None


def test_fn_raising_writes_nothing(db):
    db.put(b"r", b"old", ttl=50)

    class Mine(Exception):
        pass

    def fn(cur):
        raise Mine()
    with pytest.raises(Mine):
        db.update(b"r", fn)
    with pytest.raises(Mine):
        db.update(b"absent", fn)
    assert db.get(b"r") == b"old" and 49 <= db.ttl(b"r") <= 50
    assert db.get(b"absent") is None


@pytest.mark.parametrize("bad", [42, "str", [b"x"], True])
def test_non_bytes_result(db, bad):
    db.put(b"b", b"old")
    with pytest.raises(fusedb.ValueTypeError):
        db.update(b"b", lambda cur: bad)
    assert db.get(b"b") == b"old"


def test_argument_errors(db, access):
    with pytest.raises(fusedb.KeyTypeError):
        db.update(1, lambda cur: b"v")
    with pytest.raises(fusedb.KeyTooLargeError):
        db.update(b"", lambda cur: b"v")
    with pytest.raises(fusedb.ValueTooLargeError):
        db.update(b"k", lambda cur: b"v" * (access.opts["max_value_size"] + 1))
    with pytest.raises(fusedb.InvalidArgumentError):
        db.update(b"k", lambda cur: b"v", ttl=0)
    for fn in (5, b"v", None):
        with pytest.raises(fusedb.InvalidArgumentError):
            db.update(b"k", fn)
        with db.batch() as b, pytest.raises(fusedb.InvalidArgumentError):
            b.update(b"k", fn)                  # at once, not at commit
    assert db.get(b"k") is None


def _within(seconds: float, call):
    """``call()``'s exception, or None; fails if it has not returned in time (a
    deadlock: the thread is left behind as a daemon)."""
    out = []

    def run():
        try:
            call()
            out.append(None)
        except BaseException as e:  # noqa: BLE001 - returned to the test
            out.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"the call did not return within {seconds}s (deadlocked)"
    return out[0]


@pytest.mark.parametrize("what", ["get same key", "put other key", "incr", "delete", "scan",
                                  "batch", "stats", "flush", "update"])
def test_fn_calling_the_database_raises_instead_of_deadlocking(db, what):
    """fn runs under the key's shard lock: a call back into the database from
    it raises InvalidArgumentError (in every mode; embedded it used to wait on
    its own lock for ever), nothing is written, and the database goes on."""
    db.put(b"\x91other", b"o")
    calls = {"get same key": lambda: db.get(b"\x91k"), "put other key":
             lambda: db.put(b"\x91other", b"x"), "incr": lambda: db.incr(b"\x91n"),
             "delete": lambda: db.delete(b"\x91other"), "scan": lambda: list(db.scan()),
             "batch": lambda: db.batch().commit(), "stats": db.stats, "flush": db.flush,
             "update": lambda: db.update(b"\x91other", lambda cur: b"x")}

    def fn(cur):
        calls[what]()
        return b"written"
    e = _within(30, lambda: db.update(b"\x91k", fn))
    assert isinstance(e, fusedb.InvalidArgumentError), e
    assert "fn called the database" in str(e)
    assert db.get(b"\x91k") is None and db.get(b"\x91other") == b"o"
    assert db.update(b"\x91k", lambda cur: b"after") == b"after"     # not wedged


def test_fn_calling_the_database_in_a_batch_raises(db):
    with pytest.raises(fusedb.InvalidArgumentError):
        with db.batch() as b:
            b.put(b"\x92a", b"1")
            b.update(b"\x92b", lambda cur: db.get(b"\x92a"))
    assert db.get(b"\x92a") is None and db.get(b"\x92b") is None


def test_read_modify_write_is_atomic(db):
    """Threads incrementing through update lose nothing (fn runs under the lock)."""
    errors = []

    def work():
        try:
            for _ in range(200):
                db.update(b"\x90acc", lambda cur: b"%d" % (int(cur or b"0") + 1))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and db.get(b"\x90acc") == b"800"


def test_closed_handle(fresh):
    db = fresh().db
    db.close()
    with pytest.raises(fusedb.ClosedError):
        db.update(b"k", lambda cur: b"v")
