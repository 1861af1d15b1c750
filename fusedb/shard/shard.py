"""A shard as seen from one process: its lock, its arena, its WAL ring, and the
per-operation methods on its leaves.

Writers and readers (any thread of any attached process) call the ``*_locked``
methods while holding ``lock``. Each is O(1) or bounded by one buffer: a hash
probe, a slot write, at most one freeze (a pointer swap). The merge and split
side (the shard's merge loop only) is fusedb.shard.merging.Merger.

See docs/design.md, "Who touches what under which lock".
"""

from __future__ import annotations

from fusedb.core.entry import INT64_MAX, INT64_MIN, KIND_DEL, KIND_INT
from fusedb.shard.context import ShardContext
from fusedb.shm.meta import S_FREEZES
from fusedb.shm.slab import H_REFS, H_STATE, H_USED, STATE_FROZEN
from fusedb.wal.ring import R_HEAD

#: What the locked read path returns when a segment is not open in this process yet.
NEED_SEGMENTS = object()


class Shard:
    """One shard's shared-memory pieces in this process, built by the process's
    role (fusedb.runtime: embedded, router, client, worker) when it opens or
    attaches, and used by every thread of that process: the ``*_locked`` methods
    under ``lock``, the rest read-only.

    ``ctx``: the process's ShardContext (kept as ``store`` too, the name the
    ``*_locked`` methods use); ``lock``: the shard lock (threading.Lock when
    embedded, fusedb.shm.locks.ProcLock when multiprocess); ``arena``, ``ring``:
    its buffer arena and WAL ring; ``flusher``: its WAL writer in this process
    (fusedb.wal.writer.Flusher where this process writes the ring out, else a
    RemoteFlusher that kicks the one that does)."""

    def __init__(self, ctx: ShardContext, no: int, lock, arena, ring, flusher):
        self.store = ctx
        self.no = no
        self.lock = lock
        self.arena = arena
        self.ring = ring
        self.flusher = flusher
        self.last_end = 0   # WAL position of the last in-place incr (read under the lock)
        self.slabs = arena.slabs
        self.meta = ctx.meta
        self.low_free = max(1, int(ctx.opts.low_free_fraction * arena.nslabs))

    # -- writers (under lock) ----------------------------------------------------------

    def freeze_locked(self, leaf: int) -> None:
        """Make the leaf's active buffer its frozen buffer; caller checked there is none."""
        meta = self.meta
        a = meta.active[leaf]
        assert meta.frozen[leaf] < 0, "a leaf has at most one frozen buffer"
        meta.frozen[leaf] = a
        self.slabs[a].hdr[H_STATE] = STATE_FROZEN
        self.slabs[a].hdr[H_REFS] = 1
        meta.active[leaf] = -1
        meta.fills[leaf] += 1
        meta.stats[self.no * 8 + S_FREEZES] += 1
        self.store.wake(self.no)

    def write_locked(self, leaf: int, key: bytes, h: int, kind: int, value: bytes | None,
                     ivalue: int, exp: float, log: bool = True, logged_at: int = 0) -> int:
        """Log one mutation to the WAL ring, then apply it to the leaf's active
        buffer (WAL first: invariant 1). Returns the WAL stream position after the
        record (truthy), or 0 if there is no room now in the buffers or the ring:
        the caller releases the lock, waits, and retries; nothing was written.
        ``log=False`` applies without logging: a batch logged its record already,
        at stream position ``logged_at``."""
        meta = self.meta
        sid = meta.active[leaf]
        if sid < 0:
            sid = self.arena.alloc(leaf)
            if sid < 0:
                self.store.wake(self.no)
                return 0
            meta.active[leaf] = sid
            if self.arena.free_count() < self.low_free:
                self.store.wake(self.no)
        slab = self.slabs[sid]
        s = slab.find(key, h)
        vlen = 8 if kind == KIND_INT else (len(value) if value is not None else 0)
        if not slab.fits(s, len(key), vlen):
            if meta.frozen[leaf] >= 0:
                self.store.wake(self.no)
                return 0
            self.freeze_locked(leaf)
            sid = self.arena.alloc(leaf)
            if sid < 0:
                return 0
            meta.active[leaf] = sid
            slab = self.slabs[sid]
            s = slab.find(key, h)
        seq = meta.seq[leaf] + 1
        ring = self.ring
        start = ring.hdr[R_HEAD] if log else logged_at
        end = start
        if log:
            end = ring.append(seq, exp, kind, key, value, ivalue)
            if end < 0:
                self.store.kick_flusher(self.no)
                return 0
        if slab.hdr[H_USED] == 0:
            slab.set_first_pos(start)
        if s >= 0:
            ok = slab.update(s, seq, exp, kind, value, ivalue)
        else:
            ok = slab.insert(-1 - s, key, h, seq, exp, kind, value, ivalue)
        assert ok, "fits() promised room"
        meta.seq[leaf] = seq
        meta.writes[leaf] += 1
        return end or 1

    def incr_in_place_locked(self, leaf: int, key: bytes, h: int, delta: int, now: float):
        """In-buffer merge: if ``key`` is a live counter in the active buffer, add
        ``delta`` in its slot and return the new value; else None (the caller takes
        the general path). Raises nothing: an overflowing sum returns None too."""
        sid = self.meta.active[leaf]
        if sid < 0:
            return None
        slab = self.slabs[sid]
        s = slab.find(key, h)
        if s < 0 or slab.kind[s] != KIND_INT:
            return None
        exp = slab.exp[s]
        if exp != 0.0 and exp <= now:
            return None
        q = slab.voff[s] >> 3
        new = slab.heap_q[q] + delta
        if new < INT64_MIN or new > INT64_MAX:
            return None
        seq = self.meta.seq[leaf] + 1
        end = self.ring.append(seq, exp, KIND_INT, key, None, new)
        if end < 0:
            return None
        self.last_end = end
        slab.heap_q[q] = new
        slab.seq[s] = seq
        self.meta.seq[leaf] = seq
        self.meta.writes[leaf] += 1
        return new

    def read_buffers_locked(self, leaf: int, key: bytes, h: int):
        """(kind, payload, exp) from the active or frozen buffer, or None if the key
        is in neither. payload: bytes for a value, int for a counter, None for a
        tombstone."""
        meta = self.meta
        for sid in (meta.active[leaf], meta.frozen[leaf]):
            if sid >= 0:
                slab = self.slabs[sid]
                s = slab.find(key, h)
                if s >= 0:
                    kind = slab.kind[s]
                    if kind == KIND_INT:
                        return kind, slab.heap_q[slab.voff[s] >> 3], slab.exp[s]
                    if kind == KIND_DEL:
                        return kind, None, 0.0
                    return kind, slab.value(s), slab.exp[s]
        return None

    def read_locked(self, leaf: int, key: bytes, h: int):
        """Like :meth:`read_buffers_locked` but also searches the leaf's segments.
        Returns NEED_SEGMENTS if one is not open in this process (the caller opens
        it outside the lock with :meth:`Store.open_segments` and retries)."""
        e = self.read_buffers_locked(leaf, key, h)
        if e is not None:
            return e
        cache = self.store.segcache
        meta = self.meta
        base = leaf * 4
        for i in range(meta.nsegs[leaf]):
            seg = cache.get(meta.segs[base + i])
            if seg is None:
                return NEED_SEGMENTS
            e = segment_entry(seg, key, h)
            if e is not None:
                return e
        return None


def segment_entry(seg, key: bytes, h: int):
    """(kind, payload, exp) of ``key`` in segment ``seg``, or None."""
    j = seg.find(key, h)
    if j < 0:
        return None
    kind = seg.kind[j]
    if kind == KIND_INT:
        return kind, seg.int_value(j), seg.exp[j]
    if kind == KIND_DEL:
        return kind, None, 0.0
    return kind, seg.value(j), seg.exp[j]

