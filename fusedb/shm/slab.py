"""Leaf buffers: one slab of a shard arena, holding a hash index, fixed-size slots
and a byte heap. This module is the per-operation hot path.

Layout (docs/format.md, "Buffer slab"; the numbers: fusedb.core.layout),
offsets from the slab start::

    header  u32[16]    [0] leaf id, [1] slots used, [2] heap bytes used, [3] state,
                       [4] leaves whose frozen buffer this is (2 just after a split),
                       [5],[6] low and high 32 bits of the WAL stream position of the
                       first record applied to this buffer (WAL truncation floor)
    index   u32[cap]   open addressing, linear probe on (hash & (cap-1)); 0 = empty,
                       else slot number + 1. cap = power of two >= 2 * slots.
    hash    u64[S]     slot columns (S = slots): key hash,
    seq     u64[S]       per-leaf seqno of the slot's last mutation,
    exp     f64[S]       absolute expiry (0 = never),
    koff    u32[S]       key offset in heap,
    klen    u32[S]       key length,
    voff    u32[S]       value offset in heap (8-aligned),
    vlen    u32[S]       value length (8 for a counter),
    vcap    u32[S]       bytes reserved at voff (values are rewritten in place if they fit),
    kind    u8[S]        entry.KIND_*
    heap    bytes      keys and values, bump-allocated; value space 8-aligned.

A key occupies one slot for the life of the buffer: overwrites, increments and
deletes update the slot in place (delete sets KIND_DEL). Slots are never removed,
so the index needs no deletion markers. The buffer is *full* when a new key finds
no free slot or no heap room; the writer then freezes it (see shard).

Concurrency: every call here is made under the owning shard's lock, except reads
of a *frozen* slab, which nobody writes until the merge worker frees it.
"""

from __future__ import annotations

import numpy as np

from fusedb.core.entry import KIND_INT
from fusedb.core.layout import (H_FIRST_HI, H_FIRST_LO, H_HEAP, H_LEAF, H_REFS, H_STATE, H_USED,
                                SLAB_ACTIVE, SLAB_COLUMNS, SLAB_FREE, SLAB_FROZEN, SLAB_HDR_BYTES,
                                slab_index_cap, slab_offsets)
from fusedb.core.run import Run

HEADER_BYTES = SLAB_HDR_BYTES
STATE_FREE, STATE_ACTIVE, STATE_FROZEN = SLAB_FREE, SLAB_ACTIVE, SLAB_FROZEN
_COL_BYTES = {name: size for name, size, _fmt in SLAB_COLUMNS}

#: ``Slab.find``: the key has no slot in this buffer.
NOT_FOUND = -1


class SlabLayout:
    """Byte offsets of each column of a slab of ``slab_bytes`` with ``nslots``
    slots (``cap``: index entries; ``heap_bytes``: heap size, bytes). No lock:
    immutable value, one per Arena (each process builds its own from the arena
    header), shared by all its slabs."""

    def __init__(self, slab_bytes: int, nslots: int):
        self.slab_bytes = slab_bytes
        self.nslots = nslots
        self.cap = slab_index_cap(nslots)
        self.index_off, offs, self.heap_off = slab_offsets(nslots)
        self.cols: dict[str, tuple[int, str]] = {name: (offs[name], fmt)
                                                 for name, _size, fmt in SLAB_COLUMNS}
        self.heap_bytes = slab_bytes - self.heap_off
        self.zero_index = bytes(4 * self.cap)


class Slab:
    """Views of one slab; one object per slab per attached process, made by its
    Arena when the process creates or attaches it. Written only under its
    shard's lock (writers, freezes, merge publication, a rebuild), and read
    under it by operations and the merge loop's snapshots. Without the lock,
    only the merge loop reads it, and only while it is frozen (``to_run(copy=
    False)``): nobody writes a frozen slab until the merge loop frees it."""

    __slots__ = ("sid", "layout", "hdr", "index", "index_bytes", "mask", "nslots", "heap",
                 "heap_q", "heap_bytes", "hash", "seq", "exp", "koff", "klen", "voff", "vlen",
                 "vcap", "kind", "_buf", "_base")

    def __init__(self, buf: memoryview, base: int, layout: SlabLayout, sid: int):
        self.sid = sid
        self.layout = layout
        self._buf = buf
        self._base = base
        mv = buf[base:base + layout.slab_bytes]
        self.hdr = mv[0:HEADER_BYTES].cast("I")
        self.index_bytes = mv[layout.index_off:layout.index_off + 4 * layout.cap]
        self.index = self.index_bytes.cast("I")
        self.mask = layout.cap - 1
        self.nslots = layout.nslots
        n = layout.nslots
        for name, (off, fmt) in layout.cols.items():
            size = _COL_BYTES[name]
            setattr(self, name, mv[off:off + size * n].cast(fmt))
        self.heap = mv[layout.heap_off:layout.slab_bytes]
        self.heap_q = self.heap.cast("q")
        self.heap_bytes = layout.heap_bytes

    def release(self) -> None:
        for name in ("hdr", "index", "index_bytes", "hash", "seq", "exp", "koff", "klen",
                     "voff", "vlen", "vcap", "kind", "heap_q", "heap"):
            getattr(self, name).release()

    # -- lifecycle (under the shard lock) -------------------------------------------

    def reset(self, leaf_id: int, state: int) -> None:
        self.index_bytes[:] = self.layout.zero_index
        hdr = self.hdr
        hdr[H_LEAF] = leaf_id
        hdr[H_USED] = 0
        hdr[H_HEAP] = 0
        hdr[H_STATE] = state
        hdr[H_REFS] = 0

    def snapshot(self) -> Slab:
        """A private copy of this slab (one memcpy, under its shard's lock),
        readable with no lock: a Slab over a bytearray, not in any arena."""
        n = self.layout.slab_bytes
        return Slab(memoryview(bytearray(self._buf[self._base:self._base + n])), 0,
                    self.layout, -1)

    def copy_from(self, other: Slab) -> None:
        """Make this slab a byte-for-byte copy of ``other`` (a slab of the same
        layout, in another shard's arena: a leaf move). Under both shards' locks;
        the caller then sets the header words that differ (leaf, state, refs,
        WAL floor)."""
        n = self.layout.slab_bytes
        self._buf[self._base:self._base + n] = other._buf[other._base:other._base + n]

    # -- hot path --------------------------------------------------------------------

    def find(self, key: bytes, h: int) -> int:
        """Slot of ``key``, or NOT_FOUND."""
        index = self.index
        mask = self.mask
        hashes = self.hash
        i = h & mask
        while True:
            s = index[i]
            if s == 0:
                return NOT_FOUND
            s -= 1
            if hashes[s] == h:
                a = self.koff[s]
                if self.heap[a:a + self.klen[s]] == key:
                    return s
            i = (i + 1) & mask

    def insert(self, key: bytes, h: int, seq: int, exp: float, kind: int,
               value: bytes | None, ivalue: int) -> bool:
        """Add ``key``, which :meth:`find` did not find; False if the slab is full.

        The value is ``ivalue`` for KIND_INT, ``value`` for KIND_VALUE, nothing for KIND_DEL.
        """
        hdr = self.hdr
        s = hdr[H_USED]
        if s >= self.nslots:
            return False
        klen = len(key)
        koff = hdr[H_HEAP]
        voff = (koff + klen + 7) & ~7
        vlen = 8 if kind == KIND_INT else (len(value) if value is not None else 0)
        vcap = (vlen + 7) & ~7 or 8
        end = voff + vcap
        if end > self.heap_bytes:
            return False
        self.heap[koff:koff + klen] = key
        if kind == KIND_INT:
            self.heap_q[voff >> 3] = ivalue
        elif vlen:
            self.heap[voff:voff + vlen] = value
        self.hash[s] = h
        self.seq[s] = seq
        self.exp[s] = exp
        self.koff[s] = koff
        self.klen[s] = klen
        self.voff[s] = voff
        self.vlen[s] = vlen
        self.vcap[s] = vcap
        self.kind[s] = kind
        index = self.index      # the first free index position on the key's probe path
        mask = self.mask
        i = h & mask
        while index[i]:
            i = (i + 1) & mask
        index[i] = s + 1
        hdr[H_USED] = s + 1
        hdr[H_HEAP] = end
        return True

    def fits(self, s: int, klen: int, vlen: int) -> bool:
        """Whether writing a value of ``vlen`` bytes at slot ``s`` (or, for
        ``s == NOT_FOUND``, inserting a key of ``klen`` bytes) will succeed.
        Mirrors update/insert."""
        hdr = self.hdr
        vcap = (vlen + 7) & ~7 or 8
        if s != NOT_FOUND:
            return vlen <= self.vcap[s] or ((hdr[H_HEAP] + 7) & ~7) + vcap <= self.heap_bytes
        return (hdr[H_USED] < self.nslots
                and ((hdr[H_HEAP] + klen + 7) & ~7) + vcap <= self.heap_bytes)

    def set_first_pos(self, pos: int) -> None:
        self.hdr[H_FIRST_LO] = pos & 0xFFFFFFFF
        self.hdr[H_FIRST_HI] = pos >> 32

    def first_pos(self) -> int:
        return self.hdr[H_FIRST_LO] | (self.hdr[H_FIRST_HI] << 32)

    def update(self, s: int, seq: int, exp: float, kind: int, value: bytes | None,
               ivalue: int) -> bool:
        """Overwrite slot ``s`` in place; False if a bigger value finds no heap room."""
        vlen = 8 if kind == KIND_INT else (len(value) if value is not None else 0)
        voff = self.voff[s]
        if vlen > self.vcap[s]:
            hdr = self.hdr
            voff = (hdr[H_HEAP] + 7) & ~7
            vcap = (vlen + 7) & ~7
            if voff + vcap > self.heap_bytes:
                return False
            hdr[H_HEAP] = voff + vcap
            self.voff[s] = voff
            self.vcap[s] = vcap
        if kind == KIND_INT:
            self.heap_q[voff >> 3] = ivalue
        elif vlen:
            self.heap[voff:voff + vlen] = value
        self.vlen[s] = vlen
        self.kind[s] = kind
        self.seq[s] = seq
        self.exp[s] = exp
        return True

    def value(self, s: int) -> bytes:
        v = self.voff[s]
        return bytes(self.heap[v:v + self.vlen[s]])

    def int_value(self, s: int) -> int:
        """The counter in slot ``s`` (KIND_INT)."""
        return self.heap_q[self.voff[s] >> 3]

    def used(self) -> int:
        return self.hdr[H_USED]

    def fill(self) -> float:
        """How full the slab is, 0..1 (the larger of slot and heap use)."""
        hdr = self.hdr
        return max(hdr[H_USED] / self.nslots, hdr[H_HEAP] / self.heap_bytes)

    # -- bulk ------------------------------------------------------------------------

    def to_run(self, copy: bool) -> Run:
        """The slab's entries as a run (unsorted). ``copy=False`` gives views over
        shared memory: only for frozen slabs, which nobody writes."""
        n = self.hdr[H_USED]
        lay = self.layout
        buf = self._buf
        base = self._base

        def col(name: str, dtype: str) -> np.ndarray:
            off = lay.cols[name][0]
            a = np.frombuffer(buf, dtype, n, base + off)
            return a.copy() if copy else a

        heap_used = self.hdr[H_HEAP]
        heap = np.frombuffer(buf, np.uint8, heap_used, base + lay.heap_off)
        if copy:
            heap = heap.copy()
        return Run(col("hash", "<u8"), col("seq", "<u8"), col("exp", "<f8"),
                   col("kind", "u1"), col("koff", "<u4").astype(np.int64),
                   col("klen", "<u4").astype(np.int64), heap,
                   col("voff", "<u4").astype(np.int64), col("vlen", "<u4").astype(np.int64),
                   heap)

    def room(self, nkeys: int, nbytes: int) -> bool:
        """Whether ``nkeys`` new keys totalling ``nbytes`` of key+value surely fit
        (each entry may waste up to 16 bytes to alignment)."""
        hdr = self.hdr
        return (hdr[H_USED] + nkeys <= self.nslots
                and hdr[H_HEAP] + nbytes + 16 * nkeys + 8 <= self.heap_bytes)
