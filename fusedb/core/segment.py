"""Segment files: immutable, sorted, one leaf's materialised entries.

Byte layout: docs/format.md, "Segment file" (the numbers and formats:
fusedb.core.layout, ``segment_layout``). In short (little-endian, every
section starting on an 8-byte boundary)::

    header   64 bytes   magic "FUSESEG\\0", version, count n, bucket bits, heap sizes, seqnos
    hash     u64[n]     xxh3_64 of each key
    seq      u64[n]     per-leaf seqno of each entry
    exp      f64[n]     absolute expiry (0 = never)
    voff     u64[n+1]   value i = vals[voff[i]:voff[i+1]]
    koff     u32[n+1]   key i   = keys[koff[i]:koff[i+1]]
    kind     u8[n]      entry.KIND_*
    buckets  u32[2^b+1] hash index: entries of bucket x are order[buckets[x]:buckets[x+1]]
    order    u32[n]     entry numbers grouped by bucket (bucket = hash >> (64 - b))
    keys     bytes
    vals     bytes
    footer   16 bytes   xxh3_64 of everything before it, magic "FUSEEND\\0"

Entries are sorted by key (byte order), keys unique. Point lookups use the hash
index (about one probe); scans and merges use the sorted order.

A :class:`Segment` is read-only and may be shared by any thread; it stays valid
(the mmap open) for as long as someone holds it, even after the file is deleted.
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct

import numpy as np
import xxhash

from fusedb.core.entry import KIND_INT
from fusedb.core.fileio import publish
from fusedb.core.layout import (SEG_END_MAGIC, SEG_FOOTER, SEG_FOOTER_BYTES, SEG_HEADER,
                                SEG_HEADER_BYTES, SEG_MAGIC, SEG_VERSION, segment_layout)
from fusedb.core.run import Run, gather
from fusedb.errors import CorruptionError

MAGIC = SEG_MAGIC
END_MAGIC = SEG_END_MAGIC
VERSION = SEG_VERSION
HEADER = struct.Struct(SEG_HEADER)
FOOTER = struct.Struct(SEG_FOOTER)
assert HEADER.size == SEG_HEADER_BYTES and FOOTER.size == SEG_FOOTER_BYTES
_layout = segment_layout


def file_name(segid: int) -> str:
    return f"seg-{segid:016x}.fseg"


def write_segment(path: str, run: Run) -> int:
    """Write sorted, unique ``run`` as a segment file at ``path`` (atomically,
    durably); return its size in bytes."""
    n = len(run)
    if n >= 1 << 32:
        raise ValueError("segment too large")
    keys, koff = gather(run.kheap, run.kstart, run.klen)
    vals, voff = gather(run.vheap, run.vstart, run.vlen)
    if len(keys) >= 1 << 32:
        raise ValueError("segment keys too large")
    bits = (n - 1).bit_length() if n > 1 else 0
    if bits:
        bucket = (run.hash >> np.uint64(64 - bits)).astype(np.int64)
    else:
        bucket = np.zeros(n, np.int64)
    order = np.argsort(bucket, kind="stable").astype(np.uint32)
    buckets = np.zeros((1 << bits) + 1, np.uint32)
    np.cumsum(np.bincount(bucket, minlength=1 << bits), out=buckets[1:])
    max_seq = int(run.seq.max()) if n else 0
    min_seq = int(run.seq.min()) if n else 0
    header = HEADER.pack(MAGIC, VERSION, 0, n, bits, 0, len(keys), len(vals), max_seq, min_seq)
    sections = [run.hash.astype("<u8"), run.seq.astype("<u8"), run.exp.astype("<f8"),
                voff.astype("<u8"), koff.astype("<u4"), run.kind.astype(np.uint8),
                buckets.astype("<u4"), order.astype("<u4"), keys, vals]
    chunks: list[bytes | memoryview] = [header]
    for arr in sections:
        data = memoryview(np.ascontiguousarray(arr)).cast("B")
        chunks.append(data)
        if len(data) % 8:
            chunks.append(b"\x00" * (8 - len(data) % 8))
    h = xxhash.xxh3_64()
    for c in chunks:
        h.update(c)
    chunks.append(FOOTER.pack(h.intdigest(), END_MAGIC))
    return publish(path, chunks, sync_dir=False, point="segment.write")


class Segment:
    """One open segment file (read-only; safe from any thread).

    Opening checks the header, the size and the footer's magic. The checksum of
    the whole file is checked at once with ``verify=True`` (opening a database,
    ``fusedb check``), else by :meth:`verify` before the file's entries are
    merged into a new segment: a point read of a segment another process has
    just published maps a few pages of it, not the whole file (docs/design.md,
    "Checksums")."""

    def __init__(self, path: str, segid: int = -1, verify: bool = True):
        self.path = path
        self.segid = segid
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise CorruptionError(f"segment file missing: {path}", path, 0) from None
        try:
            self.size = os.fstat(fd).st_size
            if self.size < HEADER.size + FOOTER.size:
                raise CorruptionError(f"segment truncated: {path} is {self.size} bytes",
                                      path, self.size)
            self._mm = mmap.mmap(fd, self.size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        mv = memoryview(self._mm)
        magic, version, _flags, n, bits, _r, kbytes, vbytes, self.max_seq, self.min_seq = \
            HEADER.unpack_from(mv, 0)
        if magic != MAGIC:
            raise CorruptionError(f"not a segment file (bad magic) at offset 0: {path}", path, 0)
        if version != VERSION:
            raise CorruptionError(f"unknown segment format version {version} at offset 8: {path}",
                                  path, 8)
        if bits != ((n - 1).bit_length() if n > 1 else 0):
            # The writer's rule; checked first, so a damaged count or bits field
            # never makes the size computation build a huge integer.
            raise CorruptionError(f"segment header damaged at offset 16 (count {n}, bucket "
                                  f"bits {bits}): {path}", path, 16)
        off, total = _layout(n, bits, kbytes, vbytes)
        if total != self.size:
            raise CorruptionError(
                f"segment truncated or padded: {path} is {self.size} bytes, header says {total}",
                path, min(total, self.size))
        self._checksum, end = FOOTER.unpack_from(mv, total - FOOTER.size)
        if end != END_MAGIC:
            raise CorruptionError(f"segment footer magic bad at offset {total - 8}: {path}",
                                  path, total - 8)
        self._total = total
        self.verified = False
        self._mm_view = mv
        if verify:
            self.verify()
        self.count = n
        self.shift = 64 - bits
        self._off = off
        self._kbytes, self._vbytes = kbytes, vbytes
        self.hash = mv[off["hash"]:off["hash"] + 8 * n].cast("Q")
        self.seq = mv[off["seq"]:off["seq"] + 8 * n].cast("Q")
        self.exp = mv[off["exp"]:off["exp"] + 8 * n].cast("d")
        self.voff = mv[off["voff"]:off["voff"] + 8 * (n + 1)].cast("Q")
        self.koff = mv[off["koff"]:off["koff"] + 4 * (n + 1)].cast("I")
        self.kind = mv[off["kind"]:off["kind"] + n]
        self.buckets = mv[off["buckets"]:off["buckets"] + 4 * ((1 << bits) + 1)].cast("I")
        self.order = mv[off["order"]:off["order"] + 4 * n].cast("I")
        self.keys = mv[off["keys"]:off["keys"] + kbytes]
        self.vals = mv[off["vals"]:off["vals"] + vbytes]
        #: The compiled kernel's view of this file (fusedb.core._kernel.KSegment),
        #: made on its first probe; dropped by close() before the unmap.
        self.kview = None
        self._views = [self.hash, self.seq, self.exp, self.voff, self.koff, self.kind,
                       self.buckets, self.order, self.keys, self.vals, mv]

    def verify(self) -> None:
        """Check the whole file against its footer checksum (once per object);
        raises CorruptionError on a mismatch."""
        if self.verified:
            return
        end = self._total - FOOTER.size
        if self._checksum != xxhash.xxh3_64_intdigest(self._mm_view[:end]):
            raise CorruptionError(f"segment checksum mismatch at offset {end}: {self.path}",
                                  self.path, end)
        self.verified = True

    # -- point access (hot path when a key is not in a buffer) -------------------

    def find(self, key: bytes, h: int) -> int:
        """Entry number of ``key`` (whose hash is ``h``), or -1."""
        b = h >> self.shift
        buckets = self.buckets
        i, e = buckets[b], buckets[b + 1]
        while i < e:
            j = self.order[i]
            if self.hash[j] == h and self.keys[self.koff[j]:self.koff[j + 1]] == key:
                return j
            i += 1
        return -1

    def key(self, j: int) -> bytes:
        return bytes(self.keys[self.koff[j]:self.koff[j + 1]])

    def value(self, j: int) -> bytes:
        """Value bytes of entry ``j`` as stored (8 raw bytes for a counter)."""
        return bytes(self.vals[self.voff[j]:self.voff[j + 1]])

    def int_value(self, j: int) -> int:
        assert self.kind[j] == KIND_INT
        return int.from_bytes(self.vals[self.voff[j]:self.voff[j] + 8], "little", signed=True)

    def lower_bound(self, key: bytes) -> int:
        """First entry number whose key is >= ``key``."""
        return bisect.bisect_left(_SegmentKeys(self), key)

    # -- bulk access ---------------------------------------------------------------

    def to_run(self) -> Run:
        """All entries as numpy views over the mapping (no copy)."""
        n, off, mm = self.count, self._off, self._mm
        voff = np.frombuffer(mm, "<u8", n + 1, off["voff"]).astype(np.int64)
        koff = np.frombuffer(mm, "<u4", n + 1, off["koff"]).astype(np.int64)
        return Run(
            np.frombuffer(mm, "<u8", n, off["hash"]),
            np.frombuffer(mm, "<u8", n, off["seq"]),
            np.frombuffer(mm, "<f8", n, off["exp"]),
            np.frombuffer(mm, np.uint8, n, off["kind"]),
            koff[:-1], np.diff(koff),
            np.frombuffer(mm, np.uint8, self._kbytes, off["keys"]),
            voff[:-1], np.diff(voff),
            np.frombuffer(mm, np.uint8, self._vbytes, off["vals"]),
        )

    def close(self) -> None:
        """Release the mapping (at once, or when the last reader's view goes)."""
        self.kview = None
        for v in self._views:
            v.release()
        self._views = []
        try:
            self._mm.close()
        except BufferError:
            # A reader (a scan iterator) still holds a numpy view of the file: the
            # mapping is freed by the garbage collector when that view goes.
            pass


class _SegmentKeys:
    """A segment seen as a sorted sequence of its keys (bytes), for ``bisect``.
    Made by :meth:`Segment.lower_bound` for one search, on the calling thread
    (a scan reading a leaf after its snapshot); no lock: segments are
    immutable."""

    def __init__(self, seg: Segment):
        self.seg = seg

    def __len__(self) -> int:
        return self.seg.count

    def __getitem__(self, j: int) -> bytes:
        return self.seg.key(j)
