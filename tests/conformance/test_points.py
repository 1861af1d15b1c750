"""Point operations and the mapping protocol (README, "API")."""

from __future__ import annotations

import fusedb
from fusedb import testing


def test_put_get_overwrite(db):
    assert db.get(b"a") is None
    assert db.put(b"a", b"1") is None
    assert db.get(b"a") == b"1"
    db.put(b"a", b"2")
    assert db.get(b"a") == b"2"
    assert db.get(b"missing", b"dflt") == b"dflt"


def test_empty_value_is_not_missing(db):
    db.put(b"e", b"")
    assert db.get(b"e") == b""
    assert b"e" in db and db[b"e"] == b""


def test_str_keys_are_utf8_and_values_any_bytes_like(db):
    db.put("ключ", bytearray(b"ba"))
    assert db.get("ключ".encode()) == b"ba"
    db.put(memoryview(b"mv"), memoryview(b"xyz"))
    assert db.get(b"mv") == b"xyz" and type(db.get(b"mv")) is bytes
    db.put(b"\x00\xff", b"\x00" * 3)
    assert db.get(bytearray(b"\x00\xff")) == b"\x00\x00\x00"


def test_limits_are_inclusive(db, access):
    k, v = b"k" * access.opts["max_key_size"], b"v" * access.opts["max_value_size"]
    db.put(k, v)
    assert db.get(k) == v


def test_delete(db):
    db.put(b"d", b"x")
    assert db.delete(b"d") is True
    assert db.get(b"d") is None
    assert db.delete(b"d") is False
    assert db.delete(b"never") is False


def test_incr_decr(db):
    assert db.incr(b"n") == 1
    assert db.incr(b"n", 41) == 42
    assert db.decr(b"n") == 41
    assert db.decr(b"n", 50) == -9
    assert db.get(b"n") == b"-9"          # a counter reads back as ASCII decimal
    assert db.incr(b"m", -3) == -3
    assert db.incr(b"n", 0) == -9


def test_incr_parses_ascii_decimal_values(db):
    db.put(b"v", b"41")
    assert db.incr(b"v") == 42
    db.put(b"z", b"0")
    assert db.incr(b"z") == 1
    db.put(b"neg", b"-7")
    assert db.decr(b"neg", 2) == -9
    db.put(b"max", b"%d" % (2 ** 63 - 2))
    assert db.incr(b"max") == 2 ** 63 - 1
    db.put(b"min", b"%d" % -(2 ** 63))
    assert db.get(b"min") == b"-9223372036854775808"
    assert db.incr(b"min", 0) == -(2 ** 63)


def test_counter_after_put_and_delete(db):
    db.incr(b"c", 5)
    db.put(b"c", b"text")
    assert db.get(b"c") == b"text"
    db.delete(b"c")
    assert db.incr(b"c") == 1


def test_get_many(db):
    db.put(b"a", b"1")
    db.incr(b"n", 7)
    assert db.get_many([b"a", b"b", b"n", "a"]) == [b"1", None, b"7", b"1"]
    assert db.get_many([]) == []
    assert db.get_many(iter([b"a"])) == [b"1"]


def test_mapping_protocol(db):
    db[b"m"] = b"v"
    assert db[b"m"] == b"v"
    assert b"m" in db and b"x" not in db
    del db[b"m"]
    assert b"m" not in db
    try:
        db[b"m"]
        raise AssertionError("db[missing] must raise")
    except fusedb.FuseDBKeyError as e:
        assert isinstance(e, KeyError)
    try:
        del db[b"m"]
        raise AssertionError("del db[missing] must raise")
    except KeyError:
        pass


def test_ttl_of_a_key_without_one(db):
    db.put(b"p", b"v")
    assert db.ttl(b"p") == fusedb.TTL_NONE == -1.0
    assert db.ttl(b"nope") == fusedb.TTL_MISSING == -2.0


def test_many_keys_through_merges_and_flush(db):
    """Enough writes for buffers to freeze, merge and split; all read back, also
    after flush()."""
    want = {}
    for i in range(400):
        k = bytes([i % 251 + 1]) + b"k%03d" % i
        want[k] = b"v%d" % i * 3
        db.put(k, want[k])
    for i in range(0, 400, 3):
        k = bytes([i % 251 + 1]) + b"k%03d" % i
        assert db.delete(k)
        del want[k]
    db.flush()
    assert db.get_many(list(want)) == list(want.values())
    assert dict(db.scan()) == want
    st = db.stats()
    assert st["frozen_buffers"] == 0 and st["leaves"] >= 2 and st["segments"] >= 1


def test_handle_repr_and_closed_flag(db):
    assert db.closed is False and isinstance(db.path, str)
    assert "FuseDB" in repr(db)


def test_the_access_mode_is_what_it_says(db, access):
    """The suite checks what it claims to: the handle's role and shard count."""
    assert testing.mode_role(db) == access.role
    assert testing.shard_count(db) == access.shards
    assert db.stats()["mode"] == ("embedded" if access.role == "embedded" else "multiprocess")
