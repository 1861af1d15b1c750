"""fusedb.core.layout pins the bytes: every size, offset and magic computed from
it must be what the classes that map shared memory and write files actually
use, so a change to one without the other fails here."""

from __future__ import annotations

import ast
import ctypes
import os
import struct

import numpy as np

from fusedb.core import layout as L
from fusedb.core import manifest, retry
from fusedb.core.entry import KIND_INT, KIND_VALUE
from fusedb.core.run import Run
from fusedb.core.segment import Segment, write_segment
from fusedb.options import MAX_SEGMENTS_LIMIT
from fusedb.runtime import identity
from fusedb.shm import locks, meta as meta_mod, region, slab as slab_mod
from fusedb.shm.arena import Arena
from fusedb.shm.meta import Meta
from fusedb.wal import format as walfmt, ring as ring_mod
from fusedb.wal.ring import Ring


def _name(what: str) -> str:
    return region.name(f"layouttest{os.getpid()}", what)


def _u64(buf, off: int) -> int:
    return struct.unpack_from("<Q", buf, off)[0]


def test_layout_imports_nothing_from_fusedb_but_errors():
    tree = ast.parse(open(L.__file__).read())
    mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert all(m == "__future__" or not m.startswith("fusedb") or m == "fusedb.errors"
               for m in mods), mods


def test_magics_and_formats():
    for tag, value in ((b"FUSEMET2", L.META_MAGIC), (b"FUSEARN1", L.ARENA_MAGIC),
                       (b"FUSERNG1", L.RING_MAGIC)):
        assert struct.unpack("<Q", tag)[0] == value
    assert struct.calcsize(L.WAL_FILE_HEADER) == 64
    assert struct.calcsize(L.WAL_RECORD_HEADER) == 16
    assert struct.calcsize(L.WAL_BODY_HEADER) == 16
    assert struct.calcsize(L.WAL_MUTATION) == 24
    assert struct.calcsize(L.WAL_ONE_MUTATION) == 40
    assert struct.calcsize(L.SEG_HEADER) == L.SEG_HEADER_BYTES == 64
    assert struct.calcsize(L.SEG_FOOTER) == L.SEG_FOOTER_BYTES == 16
    assert walfmt.FILE_HEADER.size == 64 and walfmt.MAGIC == b"FUSEWAL1"
    assert manifest.MAGIC == L.MANIFEST_MAGIC == b"FUSEMAN1\n"
    assert manifest.FORMAT_VERSION == L.MANIFEST_VERSION == 1
    assert (identity.FORMAT, identity.VERSION) == (L.IDENTITY_FORMAT, L.IDENTITY_VERSION)
    # The segment limit is written once.
    assert MAX_SEGMENTS_LIMIT == L.MAX_SEGS == meta_mod.MAX_SEGS
    # Versions: a change here is a format change (docs/format.md).
    assert (L.META_VERSION, L.ARENA_VERSION, L.RING_VERSION, L.WAL_VERSION,
            L.SEG_VERSION) == (6, 1, 1, 1, 1)


def test_retry_and_locks_use_the_layout_words():
    assert (retry.F_CURRENT, retry.F_LAST, retry.F_FAILURES) == \
        (L.F_CURRENT, L.F_LAST, L.F_FAILURES) == ((0, 1), 2, (3, 4))
    assert L.F_WORDS == 8
    assert locks.LOCK_BYTES == L.LOCK_BYTES == 64
    assert L.MUTEX_BYTES + 4 * 4 == L.LOCK_BYTES          # flag, dead tid, 2 reserved
    assert 4 * L.L_REPAIR == L.MUTEX_BYTES and L.L_DEAD == L.L_REPAIR + 1
    assert locks.mutex_size() <= L.MUTEX_BYTES


def test_meta_block_matches_layout():
    ml, mk, s = 64, 32, 3
    nm = _name("meta")
    m = Meta(nm, ml, mk, s, create=True)
    try:
        off = L.meta_offsets(ml, mk, s)
        assert m.region.size == L.meta_region_bytes(ml, mk, s) == meta_mod.region_bytes(ml, mk, s)
        buf = m.region.buf
        assert _u64(buf, 8 * L.M_MAGIC) == L.META_MAGIC
        assert _u64(buf, 8 * L.M_SHARDS) == s
        m.shard_stats(2)[L.S_LOGICAL] = 1234
        assert _u64(buf, off["stats"] + 8 * (2 * L.S_WORDS + L.S_LOGICAL)) == 1234
        assert m.stats[2 * L.S_WORDS + L.S_LOGICAL] == 1234
        m.worker_slots(1)[L.W_REPAIRS] = 77
        assert _u64(buf, off["workers"] + 8 * (1 * L.W_WORDS + L.W_REPAIRS)) == 77
        m.shard_faults(2)[L.F_LAST] = 99
        assert _u64(buf, off["faults"] + 8 * (2 * L.F_WORDS + L.F_LAST)) == 99
        assert [len(m.shard_stats(i)) for i in range(s)] == [L.S_WORDS] * s
        m.set_segs(5, [11, 12, 13, 14])
        assert _u64(buf, off["segs"] + 8 * (5 * L.MAX_SEGS + 3)) == 14
        m.mseq[7] = 4242
        assert _u64(buf, off["mseq"] + 8 * 7) == 4242
        # The client registry is the last array, each slot C_WORDS words.
        assert m.register_client(os.getpid(), 1234567) == 0
        assert _u64(buf, off["clients"] + 8 * L.C_PID) == os.getpid()
        assert _u64(buf, off["clients"] + 8 * L.C_SINCE) == 1234567
        assert _u64(buf, off["clients"] + 8 * L.C_START) == meta_mod.process_start(os.getpid())
        assert off["clients"] + 8 * L.C_WORDS * L.CLIENT_SLOTS == m.region.size
        m.hdr[L.M_SERVE_PID] = 4321
        assert _u64(buf, 8 * 15) == 4321 and L.M_UNLISTED == 16
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        for j in range(s + L.LOCK_EXTRA):
            slot = m.lock_slot(j)
            assert ctypes.addressof(slot) - base == off["locks"] + j * L.LOCK_BYTES
            del slot
        assert off["locks"] % L.LOCK_BYTES == 0
    finally:
        m.close()
        region.Region(nm).unlink()


def test_meta_defaults_match_the_documented_size():
    # docs/format.md, "Meta block": 4,582,048 bytes with ML=4096, MK=512, S=1
    # (version 6: 16 stats words per shard, 64 bytes more for one shard).
    assert L.meta_region_bytes(4096, 512, 1) == 4582048
    assert L.meta_offsets(4096, 512, 1)["mseq"] == 4543136
    assert L.meta_offsets(4096, 512, 1)["clients"] == 4575904


def test_arena_and_slabs_match_layout():
    nslabs, slab_bytes, nslots = 5, 8192, 16
    nm = _name("arena")
    a = Arena(nm, nslabs, slab_bytes, nslots, create=True)
    try:
        assert a.region.size == L.arena_region_bytes(nslabs, slab_bytes)
        buf = a.region.buf
        assert _u64(buf, 8 * L.A_MAGIC) == L.ARENA_MAGIC
        assert _u64(buf, 8 * L.A_NSLOTS) == nslots
        assert _u64(buf, 8 * L.A_FREE_TOP) == nslabs
        assert struct.unpack_from("<I", buf, L.ARENA_HDR_BYTES)[0] == nslabs - 1
        data_off = L.arena_data_off(nslabs)
        assert data_off % L.ARENA_ALIGN == 0
        for i, sl in enumerate(a.slabs):
            assert sl._base == data_off + i * slab_bytes
        sid = a.alloc(9)
        sl = a.slabs[sid]
        start = data_off + sid * slab_bytes
        assert struct.unpack_from("<I", buf, start + 4 * L.H_LEAF)[0] == 9
        assert struct.unpack_from("<I", buf, start + 4 * L.H_STATE)[0] == L.SLAB_ACTIVE
        index_off, cols, heap_off = L.slab_offsets(nslots)
        lay = a.layout
        assert (lay.index_off, lay.heap_off, lay.cap) == (index_off, heap_off,
                                                           L.slab_index_cap(nslots))
        assert {n: o for n, (o, _f) in lay.cols.items()} == cols
        assert sl.insert(b"k", 123, 7, 0.0, KIND_INT, None, 5)
        assert struct.unpack_from("<Q", buf, start + cols["hash"])[0] == 123
        assert struct.unpack_from("<Q", buf, start + cols["seq"])[0] == 7
        assert buf[start + cols["kind"]] == KIND_INT
        assert struct.unpack_from("<q", buf, start + heap_off + 8)[0] == 5
        assert slab_mod.HEADER_BYTES == L.SLAB_HDR_BYTES
    finally:
        a.close()
        region.Region(nm).unlink()


def test_slab_documented_offsets():
    # docs/format.md, "Buffer slab": the default and the small layout.
    _i, cols, heap = L.slab_offsets(2048)
    assert (cols["hash"], cols["kind"], heap) == (16448, 106560, 108608)
    _i, cols, heap = L.slab_offsets(4)
    assert (cols["hash"], cols["kind"], heap) == (96, 272, 280)


def test_ring_matches_layout():
    cap = 4096
    nm = _name("wal0")
    r = Ring(nm, cap, create=True)
    try:
        assert r.region.size == L.ring_region_bytes(cap)
        assert ring_mod.DATA_OFF == L.RING_DATA_OFF
        buf = r.region.buf
        assert _u64(buf, 8 * L.R_MAGIC) == L.RING_MAGIC
        assert _u64(buf, 8 * L.R_CAP) == cap
        pos = r.append(3, 0.0, KIND_VALUE, b"key", b"value", 0)
        assert _u64(buf, 8 * L.R_HEAD) == pos == L.pad16(16 + 40 + 8)
        rec = struct.Struct(L.WAL_RECORD_HEADER).unpack_from(buf, L.RING_DATA_OFF)
        assert rec[1:] == (40 + 8, L.T_MUTATIONS)
        one = struct.Struct(L.WAL_ONE_MUTATION).unpack_from(buf, L.RING_DATA_OFF + 16)
        assert one == (0, 1, 0, 3, 0.0, KIND_VALUE, 0, 3, 5)
        pos2 = r.append_many([(4, 0.0, KIND_VALUE, b"key", b"value", 0)])
        # A one-mutation record is the same bytes from either writer (but the lsn).
        assert pos2 - pos == pos
        assert bytes(r.data[pos + 8:pos + 16]) == bytes(r.data[8:16])
        assert bytes(r.data[pos + 24:pos2]) == bytes(r.data[24:pos]).replace(
            (3).to_bytes(8, "little"), (4).to_bytes(8, "little"), 1)
    finally:
        r.close()
        region.Region(nm).unlink()


def test_wal_file_header_bytes(tmp_path):
    p = str(tmp_path / walfmt.file_name(2, 7))
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert walfmt.write_file_header(fd, 2, 7, 4096) == 64
    finally:
        os.close(fd)
    raw = open(p, "rb").read()
    assert len(raw) == 64 and raw[:8] == L.WAL_MAGIC
    assert struct.unpack(L.WAL_FILE_HEADER, raw) == (L.WAL_MAGIC, L.WAL_VERSION, 2, 7, 4096)


def test_segment_file_matches_layout(tmp_path):
    keys = [b"apple", b"count"]
    vals = [b"red", (42).to_bytes(8, "little", signed=True)]
    kheap = np.frombuffer(b"".join(keys), np.uint8)
    vheap = np.frombuffer(b"".join(vals), np.uint8)
    run = Run(np.array([0x517a430dcf1f8a00, 0x810a33751161c4f1], np.uint64),
              np.array([7, 9], np.uint64), np.zeros(2), np.array([KIND_VALUE, KIND_INT], np.uint8),
              np.array([0, 5], np.int64), np.array([5, 5], np.int64), kheap,
              np.array([0, 3], np.int64), np.array([3, 8], np.int64), vheap)
    p = str(tmp_path / "seg")
    size = write_segment(p, run)
    raw = open(p, "rb").read()
    offsets, total = L.segment_layout(2, 1, 10, 11)
    # docs/format.md, "Worked example: a 2-entry segment".
    assert size == total == len(raw) == 232
    assert offsets["koff"] == 136 and offsets["vals"] == 200
    head = struct.unpack_from(L.SEG_HEADER, raw, 0)
    assert head[:5] == (L.SEG_MAGIC, L.SEG_VERSION, 0, 2, 1)
    assert struct.unpack_from(L.SEG_FOOTER, raw, total - L.SEG_FOOTER_BYTES)[1] == L.SEG_END_MAGIC
    seg = Segment(p)
    try:
        assert seg.find(b"count", 0x810a33751161c4f1) == 1 and seg.int_value(1) == 42
    finally:
        seg.close()
