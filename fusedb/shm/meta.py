"""The meta block: routing table, leaf table and counters, in shared memory.

Layout (docs/format.md, "Meta block"); ML = max_leaves, MK = max_key_size::

    header     u64[32]      [0] magic "FUSEMET1", [1] layout version, [2] route version
                            (a seqlock: odd while the table changes), [3] leaves in the
                            routing table, [4] ML, [5] MK, [6] shards, [7] next leaf id,
                            [8] next segment id
    stats      u64[shards*8] per shard: merges, splits, segment bytes written, segment
                            files written, write stalls, buffer freezes, logical bytes, spare
    bound_len  u32[ML]      routing table, sorted by lower bound: length of bound i
    route_leaf u32[ML]      leaf id of routing entry i
    bounds     u8[ML*MK]    lower bound i at i*MK (entry 0's bound is empty: -inf)
    leaf table, indexed by leaf id:
      shard u32[ML], active i32[ML] (slab or -1), frozen i32[ML] (slab or -1),
      nsegs u32[ML], segs u64[ML*4] (newest first), seq u64[ML] (last seqno used),
      fills u32[ML] (buffers frozen so far), writes u64[ML] (mutations so far),
      mseq u64[ML] (highest seqno held by the leaf's segments)

Who writes what: a leaf's table entry under its shard's lock; the routing table
and the id counters under the meta lock *and* the lock of the shard whose leaf
splits. Readers of the routing table copy it under the seqlock (no lock).
"""

from __future__ import annotations

import struct

from .region import Region

MAGIC = struct.unpack("<Q", b"FUSEMET1")[0]
LAYOUT_VERSION = 1
M_MAGIC, M_VERSION, M_ROUTE_VER, M_NLEAVES, M_MAX_LEAVES, M_MAX_KEY, M_SHARDS, \
    M_NEXT_LEAF, M_NEXT_SEG = range(9)
MAX_SEGS = 4
STAT_FIELDS = ("merges", "splits", "segment_bytes_written", "segment_files_written",
               "write_stalls", "buffer_freezes", "logical_bytes_written", "spare")
S_MERGES, S_SPLITS, S_SEG_BYTES, S_SEG_FILES, S_STALLS, S_FREEZES, S_LOGICAL, _ = range(8)


def _sizes(max_leaves: int, max_key: int, shards: int) -> list[tuple[str, int, str]]:
    ml = max_leaves
    return [("hdr", 32 * 8, "Q"), ("stats", shards * 8 * 8, "Q"), ("bound_len", 4 * ml, "I"),
            ("route_leaf", 4 * ml, "I"), ("bounds", ml * max_key, "B"),
            ("shard", 4 * ml, "I"), ("active", 4 * ml, "i"), ("frozen", 4 * ml, "i"),
            ("nsegs", 4 * ml, "I"), ("segs", 8 * MAX_SEGS * ml, "Q"), ("seq", 8 * ml, "Q"),
            ("fills", 4 * ml, "I"), ("writes", 8 * ml, "Q"), ("mseq", 8 * ml, "Q")]


class Meta:
    """Views of the meta block (one per attached process)."""

    def __init__(self, nm: str, max_leaves: int = 0, max_key: int = 0, shards: int = 0,
                 create: bool = False):
        if create:
            total = sum((size + 7) & ~7 for _n, size, _f in _sizes(max_leaves, max_key, shards))
            self.region = Region(nm, total)
        else:
            self.region = Region(nm)
        buf = self.region.buf
        hdr = buf[0:256].cast("Q")
        if create:
            hdr[M_MAGIC] = MAGIC
            hdr[M_VERSION] = LAYOUT_VERSION
            hdr[M_MAX_LEAVES] = max_leaves
            hdr[M_MAX_KEY] = max_key
            hdr[M_SHARDS] = shards
        elif hdr[M_MAGIC] != MAGIC or hdr[M_VERSION] != LAYOUT_VERSION:
            raise RuntimeError(f"shared memory {nm} is not a FuseDB meta block of this version")
        self.max_leaves = hdr[M_MAX_LEAVES]
        self.max_key = hdr[M_MAX_KEY]
        self.shards = hdr[M_SHARDS]
        hdr.release()
        off = 0
        self._views = []
        for field, size, fmt in _sizes(self.max_leaves, self.max_key, self.shards):
            v = buf[off:off + size].cast(fmt)
            setattr(self, field, v)
            self._views.append(v)
            off += (size + 7) & ~7

    def close(self) -> None:
        for v in self._views:
            v.release()
        self.region.close()

    # -- routing table ---------------------------------------------------------------

    def bound(self, i: int) -> bytes:
        mk = self.max_key
        return bytes(self.bounds[i * mk:i * mk + self.bound_len[i]])

    def route_snapshot(self) -> tuple[int, list[bytes], list[int]]:
        """(version, lower bounds, leaf ids) copied consistently under the seqlock."""
        hdr = self.hdr
        while True:
            v1 = hdr[M_ROUTE_VER]
            if v1 & 1:
                continue
            n = hdr[M_NLEAVES]
            bounds = [self.bound(i) for i in range(n)]
            leaves = list(self.route_leaf[:n])
            if hdr[M_ROUTE_VER] == v1:
                return v1, bounds, leaves

    def route_insert(self, pos: int, bound: bytes, leaf_id: int) -> None:
        """Insert routing entry ``pos``; caller holds the meta lock and has made the
        seqlock odd."""
        n = self.hdr[M_NLEAVES]
        mk = self.max_key
        # Shift entries [pos, n) up by one, last first.
        for i in range(n, pos, -1):
            self.bound_len[i] = self.bound_len[i - 1]
            self.route_leaf[i] = self.route_leaf[i - 1]
        self.bounds[(pos + 1) * mk:(n + 1) * mk] = self.bounds[pos * mk:n * mk].tobytes()
        self.bounds[pos * mk:pos * mk + len(bound)] = bound
        self.bound_len[pos] = len(bound)
        self.route_leaf[pos] = leaf_id
        self.hdr[M_NLEAVES] = n + 1

    def route_set(self, entries: list[tuple[bytes, int]]) -> None:
        """Replace the whole routing table (at open, before anyone reads it)."""
        mk = self.max_key
        for i, (bound, leaf_id) in enumerate(entries):
            self.bounds[i * mk:i * mk + len(bound)] = bound
            self.bound_len[i] = len(bound)
            self.route_leaf[i] = leaf_id
        self.hdr[M_NLEAVES] = len(entries)
        self.hdr[M_ROUTE_VER] += 2

    def route_pos(self, leaf_id: int) -> int:
        for i in range(self.hdr[M_NLEAVES]):
            if self.route_leaf[i] == leaf_id:
                return i
        raise KeyError(leaf_id)

    def leaf_range(self, leaf_id: int) -> tuple[bytes, bytes | None]:
        """[lo, hi) of a leaf; hi None for the last leaf. Stable for the caller while
        it holds the leaf's shard lock or is the shard's worker (only it splits)."""
        pos = self.route_pos(leaf_id)
        hi = self.bound(pos + 1) if pos + 1 < self.hdr[M_NLEAVES] else None
        return self.bound(pos), hi

    # -- leaf table ------------------------------------------------------------------

    def segs_of(self, leaf_id: int) -> list[int]:
        base = leaf_id * MAX_SEGS
        return list(self.segs[base:base + self.nsegs[leaf_id]])

    def set_segs(self, leaf_id: int, segids: list[int]) -> None:
        assert len(segids) <= MAX_SEGS
        base = leaf_id * MAX_SEGS
        for i, s in enumerate(segids):
            self.segs[base + i] = s
        self.nsegs[leaf_id] = len(segids)

    def init_leaf(self, leaf_id: int, shard: int, seq: int, segids: list[int]) -> None:
        self.shard[leaf_id] = shard
        self.active[leaf_id] = -1
        self.frozen[leaf_id] = -1
        self.seq[leaf_id] = seq
        self.fills[leaf_id] = 0
        self.writes[leaf_id] = 0
        self.mseq[leaf_id] = seq
        self.set_segs(leaf_id, segids)

