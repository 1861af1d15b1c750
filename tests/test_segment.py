"""Segment files: round trip, hash-index lookups, and damage detection that names
the file and offset."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fusedb import testing
from fusedb.core.entry import KIND_DEL, KIND_INT, KIND_VALUE, key_hash
from fusedb.errors import CorruptionError
from fusedb.core.merge import merge_runs
from fusedb.core.run import Run
from fusedb.core.segment import HEADER, Segment, write_segment


def make_run(items: dict[bytes, tuple[int, bytes]]) -> Run:
    keys = list(items)
    kheap = np.frombuffer(b"".join(keys), np.uint8) if keys else np.zeros(0, np.uint8)
    vals = [items[k][1] for k in keys]
    vheap = np.frombuffer(b"".join(vals), np.uint8) if vals else np.zeros(0, np.uint8)
    klen = np.array([len(k) for k in keys], np.int64)
    vlen = np.array([len(v) for v in vals], np.int64)
    n = len(keys)
    run = Run(np.array([key_hash(k) for k in keys], np.uint64), np.arange(n, dtype=np.uint64),
              np.zeros(n), np.array([items[k][0] for k in keys], np.uint8),
              np.concatenate([[0], np.cumsum(klen)[:-1]]).astype(np.int64) if n else klen, klen,
              kheap, np.concatenate([[0], np.cumsum(vlen)[:-1]]).astype(np.int64) if n else vlen,
              vlen, vheap)
    return merge_runs([run], 0.0, drop_dead=False)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=12), st.binary(max_size=40), max_size=80),
       st.lists(st.binary(min_size=1, max_size=12), max_size=20))
def test_roundtrip_and_lookup(tmp_path_factory, items, probes):
    path = str(tmp_path_factory.mktemp("seg") / "s.fseg")
    write_segment(path, make_run({k: (KIND_VALUE, v) for k, v in items.items()}))
    seg = Segment(path)
    try:
        assert seg.count == len(items)
        assert [seg.key(j) for j in range(seg.count)] == sorted(items)
        for k, v in items.items():
            j = seg.find(k, key_hash(k))
            assert j >= 0 and seg.value(j) == v
        for p in probes:
            assert (seg.find(p, key_hash(p)) >= 0) == (p in items)
            assert seg.lower_bound(p) == sum(1 for k in items if k < p)
    finally:
        seg.close()


def test_kinds_roundtrip(tmp_path):
    path = str(tmp_path / "s.fseg")
    write_segment(path, make_run({b"c": (KIND_INT, (-5).to_bytes(8, "little", signed=True)),
                                  b"d": (KIND_DEL, b""), b"v": (KIND_VALUE, b"x")}))
    seg = Segment(path)
    assert seg.int_value(seg.find(b"c", key_hash(b"c"))) == -5
    assert seg.kind[seg.find(b"d", key_hash(b"d"))] == KIND_DEL
    seg.close()


@pytest.fixture
def seg_path(tmp_path):
    path = str(tmp_path / "s.fseg")
    write_segment(path, make_run({b"k%03d" % i: (KIND_VALUE, b"v" * i) for i in range(50)}))
    return path


def _patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("where", ["header", "middle", "footer"])
def test_flipped_byte_is_detected(seg_path, where):
    size = os.path.getsize(seg_path)
    off = {"header": 20, "middle": size // 2, "footer": size - 12}[where]
    with open(seg_path, "rb") as f:
        f.seek(off)
        b = f.read(1)
    _patch(seg_path, off, bytes([b[0] ^ 0x40]))
    with pytest.raises(CorruptionError) as e:
        Segment(seg_path)
    assert e.value.path == seg_path and e.value.offset is not None


def test_truncation_is_detected(seg_path):
    size = os.path.getsize(seg_path)
    os.truncate(seg_path, size - 7)
    with pytest.raises(CorruptionError, match="truncated") as e:
        Segment(seg_path)
    assert e.value.offset == size - 7


def test_tiny_file_and_bad_magic_and_version(seg_path, tmp_path):
    p = str(tmp_path / "tiny.fseg")
    with open(p, "wb") as f:
        f.write(b"FUSESEG\x00")
    with pytest.raises(CorruptionError, match="truncated"):
        Segment(p)
    _patch(seg_path, 8, (99).to_bytes(4, "little"))
    with pytest.raises(CorruptionError, match="version 99") as e:
        Segment(seg_path)
    assert e.value.offset == 8
    _patch(seg_path, 0, b"NOTASEG!")
    with pytest.raises(CorruptionError, match="magic"):
        Segment(seg_path)


def test_missing_segment_named_by_manifest_fails_open(tmp_path):
    import fusedb
    path = str(tmp_path / "d")
    with fusedb.open(path) as db:
        db.put(b"k", b"v")
    seg = [f for f in os.listdir(path) if f.endswith(".fseg")][0]
    os.unlink(os.path.join(path, seg))
    with pytest.raises(fusedb.CorruptionError, match="missing") as e:
        fusedb.open(path)
    assert e.value.path.endswith(seg)


def test_corrupt_manifest_fails_open(tmp_path):
    import fusedb
    path = str(tmp_path / "d")
    with fusedb.open(path) as db:
        db.put(b"k", b"v")
    man = os.path.join(path, "MANIFEST")
    data = bytearray(open(man, "rb").read())
    data[20] ^= 1
    open(man, "wb").write(bytes(data))
    with pytest.raises(fusedb.CorruptionError, match="MANIFEST"):
        fusedb.open(path)


def test_header_is_64_bytes():
    assert HEADER.size == 64


def test_open_without_verify_checks_header_and_defers_checksum(seg_path):
    """A reader of a segment another process just published opens it without
    hashing the whole file; the checksum is still checked before a merge uses it."""
    size = os.path.getsize(seg_path)
    with open(seg_path, "rb") as f:
        f.seek(size // 2)
        b = f.read(1)
    _patch(seg_path, size // 2, bytes([b[0] ^ 0x40]))
    seg = Segment(seg_path, verify=False)
    assert not seg.verified
    with pytest.raises(CorruptionError, match="checksum") as e:
        seg.verify()
    assert e.value.offset == size - 16
    assert not seg.verified
    seg.close()
    _patch(seg_path, size - 8, b"NOTEND!!")
    with pytest.raises(CorruptionError, match="footer"):
        Segment(seg_path, verify=False)


def test_merge_verifies_its_inputs(tmp_path):
    """A segment corrupted on disk while the database runs is caught when a merge
    reads it (not copied into a new, validly checksummed file)."""
    import fusedb
    path = str(tmp_path / "d")
    db = fusedb.open(path)
    try:
        for i in range(50):
            db.put(b"k%03d" % i, b"v" * 50)
        db.flush()
        segs = [f for f in os.listdir(path) if f.endswith(".fseg")]
        assert segs
        testing.stop_worker(db, 0)  # this test is the worker now
        for name in segs:
            p = os.path.join(path, name)
            testing.forget_segment(db, int(name[4:-5], 16))    # as a process that never opened it
            size = os.path.getsize(p)
            with open(p, "r+b") as f:
                f.seek(size // 2)
                b = f.read(1)
                f.seek(size // 2)
                f.write(bytes([b[0] ^ 1]))
        db.put(b"k100", b"new")     # something for the merge to do
        leaf = testing.leaf_of(db, b"k000")
        with pytest.raises(CorruptionError, match="checksum"):
            testing.merge_leaf(db, leaf, full=True)
        assert db.get(b"k001") is not None      # nothing was published
    finally:
        db.close()
