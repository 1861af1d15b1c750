"""The mapping protocol (README, "Iteration"): ``iter(db)``, ``keys()``,
``values()``, ``items()``, ``len(db)``, backed by scans: live keys in byte
order, across leaves and shards, read lazily, not a snapshot (writes during an
iteration are allowed and never repeat or reorder a key). ``db[k]``, ``in`` and
``del`` are in test_points.py and the stateful test."""

from __future__ import annotations

import collections.abc

import pytest

import fusedb
from fusedb import testing


def _fill_leaves(db, n: int = 400) -> list[bytes]:
    """``n`` keys in both halves of the key space, flushed so the leaves split;
    the keys, sorted."""
    keys = sorted(bytes([0x40 + (i % 2) * 0x80]) + b"m%04d" % i for i in range(n))
    for k in keys:
        db.put(k, b"x" * 20)
    db.flush()
    return keys


def test_list_of_db_is_its_keys_in_byte_order(db, filled):
    # Before: KeyTypeError (Python fell back to db[0], db[1], ...).
    assert list(db) == sorted(filled)
    assert [k for k in db] == sorted(filled)
    assert all(type(k) is bytes for k in db)
    assert list(iter(db)) == sorted(filled)
    assert list(reversed(db)) == sorted(filled, reverse=True)


def test_keys_values_items(db, filled):
    want = sorted(filled.items())
    assert list(db.keys()) == [k for k, _ in want]
    assert list(db.values()) == [v for _, v in want]
    assert list(db.items()) == want
    assert dict(db.items()) == filled
    assert dict(db) == filled                   # dict() of a mapping: keys() and db[k]
    items = db.items()
    assert list(items) == list(items)           # a view: each iteration is a new scan
    assert isinstance(db.keys(), collections.abc.KeysView)
    assert isinstance(items, collections.abc.ItemsView)
    assert isinstance(db.values(), collections.abc.ValuesView)


def test_views_membership_and_set_operations(db, filled):
    assert b"ab" in db.keys() and "ab" in db.keys() and b"zz" not in db.keys()
    assert (b"ab", b"v-ab") in db.items()
    assert (b"ab", b"other") not in db.items() and (b"zz", b"v-zz") not in db.items()
    assert b"ab" not in db.items()              # not a pair: as a dict's items
    assert b"v-ab" in db.values() and b"nope" not in db.values()
    assert db.keys() & {b"ab", b"zz"} == {b"ab"}
    assert db.keys() == set(filled)
    assert db.keys() - {b"ab"} == set(filled) - {b"ab"}


def test_len_counts_live_keys_only(db, access, filled):
    assert len(db) == len(filled)
    db.delete(b"ab")                            # a tombstone: not counted
    db.put(b"abc", b"over")                     # an overwrite: counted once
    db.put(b"new", b"x")
    db.incr(b"n")
    db.put(b"short", b"x", ttl=0.3)
    db.flush()                                  # part in segments, part in buffers
    db.put(b"abc", b"newer")
    access.advance(0.5)                         # b"short" expires
    n = len(filled) + 1
    assert len(db) == n
    assert len(db.keys()) == len(db.values()) == len(db.items()) == n
    assert len(list(db)) == n


def test_an_empty_database(db):
    assert list(db) == [] and list(db.items()) == [] and list(db.values()) == []
    assert len(db) == 0
    assert bool(db) is True                     # a handle is true, empty or not
    assert next(iter(db), None) is None


def test_counters_and_expired_keys(db, access):
    db.incr(b"n", 42)
    db.put(b"t", b"v", ttl=0.3)
    assert list(db.items()) == [(b"n", b"42"), (b"t", b"v")]
    access.advance(0.5)
    assert list(db.items()) == [(b"n", b"42")]
    assert list(db) == [b"n"]


def test_iteration_spans_leaves_and_shards(db):
    keys = _fill_leaves(db)
    assert testing.leaves_spanned(db, b"", None) >= 4, "the data must split leaves"
    assert list(db) == keys
    assert [k for k, _ in db.items()] == keys
    assert list(reversed(db)) == keys[::-1]
    assert len(db) == len(keys)


def test_iteration_is_lazy_not_a_snapshot(db):
    """A leaf is read when the iteration reaches it: a key written after the
    iteration started, into a leaf it has not read yet, is seen; one deleted
    there is not. (Keys of a leaf already read are not seen again.)"""
    keys = _fill_leaves(db)
    late = b"\xf0late"
    assert testing.leaf_of(db, late) != testing.leaf_of(db, keys[0])
    assert testing.leaf_of(db, keys[-1]) != testing.leaf_of(db, keys[0])
    it = iter(db)
    assert next(it) == keys[0]
    db.put(late, b"x")
    db.delete(keys[-1])
    rest = list(it)
    assert late in rest and keys[-1] not in rest
    assert rest == sorted(keys[1:-1] + [late])


def test_deleting_every_key_while_iterating(db, filled):
    """A dict raises RuntimeError here; the database lets a loop change it."""
    seen = []
    for k in db:
        seen.append(k)
        del db[k]
    assert seen == sorted(filled)
    assert list(db) == [] and len(db) == 0


def test_writes_during_iteration_never_repeat_or_reorder_a_key(db):
    """Overwrites, deletes and new keys, behind and ahead of the iteration: each
    key at most once, in order; every key left alone is seen."""
    keys = _fill_leaves(db, 300)
    n, original = len(keys), set(keys)
    seen = []
    for i, k in enumerate(db):
        seen.append(k)
        if i < n // 2:
            db.put(keys[n - 1 - 2 * i], b"y" * 30)      # odd positions, from the end
            db.delete(keys[2 * i + 1])                  # odd positions, from the start
        if k in original:
            db.put(k + b"+", b"new")                    # right after k
    assert seen == sorted(set(seen)), "a key was repeated or out of order"
    assert set(keys[::2]) <= set(seen)


def test_a_closed_handle_raises(fresh):
    m = fresh()
    d = m.db
    d.put(b"a", b"1")
    it = iter(d)
    view = d.items()
    d.close()
    for call in (lambda: list(d), lambda: len(d), lambda: next(it), lambda: list(view),
                 lambda: list(d.values())):
        with pytest.raises(fusedb.ClosedError):
            call()
    assert bool(d) is True
