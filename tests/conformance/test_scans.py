"""Scans (README): live keys in byte order, never a deleted or expired key,
never one twice; range, prefix, reverse, limit; across leaves and shards."""

from __future__ import annotations

import pytest

from fusedb import testing


def test_full_scan_in_byte_order(db, filled):
    assert list(db.scan()) == sorted(filled.items())
    assert list(db.scan(reverse=True)) == sorted(filled.items(), reverse=True)


@pytest.mark.parametrize("start,stop", [(b"a", b"b"), (b"a\x00", b"abc"), (None, b"b"),
                                        (b"user:", None), (b"\x7f", b"\x80\x01"),
                                        (b"b", b"b"), (b"c", b"a"), (b"", b"\xff")])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("limit", [None, 0, 1, 3])
def test_range(db, filled, start, stop, reverse, limit):
    model = testing.Model()
    for k, v in filled.items():
        model.put(k, v, None, 0.0)
    want = model.scan(0.0, start=start, stop=stop, limit=limit, reverse=reverse)
    assert list(db.scan(start, stop, limit=limit, reverse=reverse)) == want
    assert list(db.scan(start=start, stop=stop, limit=limit, reverse=reverse)) == want


@pytest.mark.parametrize("prefix", [b"a", b"a\x00", b"user:1", b"\xff", b"\xfe", b"\x80",
                                    b"zzz", "user"])
@pytest.mark.parametrize("reverse", [False, True])
def test_prefix(db, filled, prefix, reverse):
    p = prefix.encode() if isinstance(prefix, str) else prefix
    want = sorted(((k, v) for k, v in filled.items() if k.startswith(p)), reverse=reverse)
    assert list(db.scan(prefix=prefix, reverse=reverse)) == want
    assert list(db.scan(prefix=prefix, reverse=reverse, limit=1)) == want[:1]


def test_str_bounds(db, filled):
    assert list(db.scan("user:", "user:2")) == [(b"user:1", b"v-user:1"),
                                                (b"user:10", b"v-user:10")]


def test_no_deleted_expired_or_duplicate_keys(db, access, filled):
    db.delete(b"ab")
    db.put(b"abc", b"new")                  # overwritten: once, the new value
    db.incr(b"n")                           # a counter scans as ASCII decimal
    db.put(b"t", b"v", ttl=1.0)
    db.flush()                              # some entries in segments, some in buffers
    db.put(b"abc", b"newer")
    db.delete(b"\xff")
    access.advance(1.1)
    got = list(db.scan())
    want = dict(filled)
    del want[b"ab"], want[b"\xff"]
    want.update({b"abc": b"newer", b"n": b"1"})
    assert got == sorted(want.items())


def test_across_splits_and_shards(db, access):
    """Enough data for many leaves; scans cross leaf (and shard) bounds without
    losing or repeating a key, in every direction, with limits."""
    want = {}
    for i in range(600):
        k = bytes([0x40 + (i % 2) * 0x80]) + b"s%04d" % i
        want[k] = b"v%d" % i * 10
        db.put(k, want[k])
    db.flush()
    for i in range(0, 600, 7):          # some deletes and overwrites in the buffers
        k = bytes([0x40 + (i % 2) * 0x80]) + b"s%04d" % i
        if i % 2:
            db.put(k, b"over")
            want[k] = b"over"
        else:
            db.delete(k)
            del want[k]
    assert testing.leaves_spanned(db, b"\x40", b"\xc1") >= 4, "the data must split leaves"
    items = sorted(want.items())
    assert list(db.scan()) == items
    assert list(db.scan(reverse=True)) == items[::-1]
    assert list(db.scan(limit=250)) == items[:250]
    assert list(db.scan(reverse=True, limit=250)) == items[::-1][:250]
    lo, hi = items[100][0], items[450][0]
    assert list(db.scan(lo, hi)) == items[100:450]
    assert list(db.scan(lo, hi, reverse=True, limit=77)) == items[100:450][::-1][:77]
    assert list(db.scan(prefix=b"\xc0")) == [kv for kv in items if kv[0][0] == 0xC0]


def test_scan_is_lazy_and_restartable(db, filled):
    it = db.scan()
    first = next(it)
    assert first == min(filled.items())
    assert list(it) == sorted(filled.items())[1:]
