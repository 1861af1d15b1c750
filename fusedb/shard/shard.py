"""A shard as seen from one process: its lock, its arena, its WAL ring, and the
per-operation methods on its leaves.

Writers and readers (any thread of any attached process) call the ``*_locked``
methods while holding ``lock``. Each is O(1) or bounded by one buffer: a hash
probe, a slot write, at most one freeze (a pointer swap). The merge and split
side (the shard's merge loop only) is fusedb.shard.merging.Merger.

See docs/design.md, "Who touches what under which lock".
"""

from __future__ import annotations

from fusedb.core.entry import INT64_MAX, INT64_MIN, KIND_INT
from fusedb.core.ops import entry_at
from fusedb.shard.context import ShardContext
from fusedb.core.layout import MAX_SEGS, S_FREEZES
from fusedb.shm.slab import H_REFS, H_STATE, H_USED, NOT_FOUND, STATE_FROZEN
from fusedb.wal.ring import R_HEAD

#: ``write_locked``: no room now in the leaf's buffers or the shard's WAL ring.
NO_ROOM = -1


class Shard:
    """One shard's shared-memory pieces in this process, built by the process's
    role (fusedb.runtime: embedded, router, client, worker) when it opens or
    attaches, and used by every thread of that process: the ``*_locked`` methods
    under ``lock``, the rest read-only.

    ``ctx``: the process's ShardContext (kept as ``store`` too, the name the
    ``*_locked`` methods use); ``lock``: the shard lock (threading.Lock when
    embedded, fusedb.shm.locks.ProcLock when multiprocess); ``arena``, ``ring``:
    its buffer arena and WAL ring; ``wal_writer``: its WAL writer in this process
    (fusedb.wal.writer.WalWriter where this process writes the ring out, else a
    RemoteWalWriter that kicks the one that does)."""

    def __init__(self, ctx: ShardContext, no: int, lock, arena, ring, wal_writer):
        self.ctx = ctx
        self.no = no
        self.lock = lock
        self.arena = arena
        self.ring = ring
        self.wal_writer = wal_writer
        self.slabs = arena.slabs
        self.meta = ctx.meta
        #: This shard's stats words in the meta block (indexed by S_*), written
        #: under the lock.
        self.stats = ctx.meta.shard_stats(no)
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
        self.stats[S_FREEZES] += 1
        self.ctx.wake(self.no)

    def write_locked(self, leaf: int, key: bytes, h: int, kind: int, value: bytes | None,
                     ivalue: int, exp: float, logged_at: int | None = None) -> int:
        """Log one mutation to the WAL ring, then apply it to the leaf's active
        buffer (WAL first: invariant 1). Returns the WAL stream position after the
        record, or NO_ROOM if there is no room now in the buffers or the ring:
        the caller releases the lock, waits, and retries; nothing was written.
        With ``logged_at`` the mutation is applied without logging: a batch logged
        its record already, at that stream position (returned)."""
        meta = self.meta
        sid = meta.active[leaf]
        if sid < 0:
            sid = self.arena.alloc(leaf)
            if sid < 0:
                self.ctx.wake(self.no)
                return NO_ROOM
            meta.active[leaf] = sid
            if self.arena.free_count() < self.low_free:
                self.ctx.wake(self.no)
        slab = self.slabs[sid]
        s = slab.find(key, h)
        vlen = 8 if kind == KIND_INT else (len(value) if value is not None else 0)
        if not slab.fits(s, len(key), vlen):
            if meta.frozen[leaf] >= 0:
                self.ctx.wake(self.no)
                return NO_ROOM
            self.freeze_locked(leaf)
            sid = self.arena.alloc(leaf)
            if sid < 0:
                return NO_ROOM
            meta.active[leaf] = sid
            slab = self.slabs[sid]
            s = NOT_FOUND      # a fresh buffer holds no key
        seq = meta.seq[leaf] + 1
        if logged_at is None:
            start = self.ring.hdr[R_HEAD]
            end = self.ring.append(seq, exp, kind, key, value, ivalue)
            if end < 0:
                self.ctx.kick_wal_writer(self.no)
                return NO_ROOM
        else:
            start = end = logged_at
        if slab.hdr[H_USED] == 0:
            slab.set_first_pos(start)
        if s != NOT_FOUND:
            ok = slab.update(s, seq, exp, kind, value, ivalue)
        else:
            ok = slab.insert(key, h, seq, exp, kind, value, ivalue)
        assert ok, "fits() promised room"
        meta.seq[leaf] = seq
        meta.writes[leaf] += 1
        return end

    def incr_in_place_locked(self, leaf: int, key: bytes, h: int, delta: int,
                             now: float) -> tuple[int, int] | None:
        """In-buffer merge: if ``key`` is a live counter in the active buffer, add
        ``delta`` in its slot and return (new value, WAL stream position after
        the record); else None (the caller takes the general path). Raises
        nothing: an overflowing sum, or no room in the ring, returns None too."""
        sid = self.meta.active[leaf]
        if sid < 0:
            return None
        slab = self.slabs[sid]
        s = slab.find(key, h)
        if s == NOT_FOUND or slab.kind[s] != KIND_INT:
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
        slab.heap_q[q] = new
        slab.seq[s] = seq
        self.meta.seq[leaf] = seq
        self.meta.writes[leaf] += 1
        return new, end

    def read_buffers_locked(self, leaf: int, key: bytes, h: int):
        """The key's entry (fusedb.core.ops) in the active or frozen buffer, or
        None if it is in neither."""
        meta = self.meta
        for sid in (meta.active[leaf], meta.frozen[leaf]):
            if sid >= 0:
                slab = self.slabs[sid]
                s = slab.find(key, h)
                if s != NOT_FOUND:
                    return entry_at(slab, s)
        return None

    def read_locked(self, leaf: int, key: bytes, h: int) -> tuple:
        """The key's entry in the leaf's buffers or, if in neither, its segments,
        newest first (searched only until found): ``(entry or None, None)``, or
        ``(None, segment ids)`` if a segment is not open in this process yet (the
        caller opens them outside the lock and tries again)."""
        e = self.read_buffers_locked(leaf, key, h)
        if e is not None:
            return e, None
        cache = self.ctx.segcache
        meta = self.meta
        base = leaf * MAX_SEGS
        for i in range(meta.nsegs[leaf]):
            seg = cache.get(meta.segs[base + i])
            if seg is None:
                return None, meta.segs_of(leaf)
            j = seg.find(key, h)
            if j >= 0:
                return entry_at(seg, j), None
        return None, None

    def segments_locked(self, leaf: int) -> list | None:
        """The leaf's segments, newest first, or None if one is not open in this
        process yet: the caller opens ``meta.segs_of(leaf)`` outside the lock
        (``Runtime.open_for_retry``) and tries again. Reading them needs no lock:
        segments are immutable."""
        cache = self.ctx.segcache
        segs = [cache.get(s) for s in self.meta.segs_of(leaf)]
        return None if None in segs else segs


def segments_entry(segs: list, key: bytes, h: int):
    """The key's entry in the newest of the segments ``segs`` that holds it, or None."""
    for seg in segs:
        j = seg.find(key, h)
        if j >= 0:
            return entry_at(seg, j)
    return None
