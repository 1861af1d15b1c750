"""The merge and split side of a shard: what only the shard's merge loop does.

One :class:`Merger` per shard, in the process that runs the shard's merge loop
(the embedded process: one thread per shard; multiprocess: the shard's worker
process). It is the only code that changes a leaf's segment list and key range.
"""

from __future__ import annotations

import os

import numpy as np

from fusedb.core import failpoints
from fusedb.core.entry import KIND_DEL
from fusedb.core.merge import cut, merge_runs, split_point
from fusedb.core.retry import step
from fusedb.core.scheduler import fold_count
from fusedb.core.segment import file_name
from fusedb.shard.context import ShardContext
from fusedb.shard.shard import Shard
from fusedb.core.layout import MAX_SEGS, M_NEXT_LEAF, S_MERGES, S_SEG_BYTES, S_SEG_FILES, S_SPLITS
from fusedb.shm.slab import H_FIRST_HI, H_FIRST_LO, H_HEAP, H_REFS, H_USED


class Merger:
    """Merges, splits and the manifest writes that follow them, for one shard.

    Called by the shard's merge loop (fusedb.shard.worker.Worker: one thread;
    in a worker process also its repair and close paths, same thread), and by
    the embedded close after that loop stopped: never by two threads at once.
    Takes the shard lock only for O(1) snapshots and publications, and the meta
    lock inside it (lock order: shard lock -> meta lock); reads inputs and
    writes segment files with no lock held."""

    def __init__(self, shard: Shard, ctx: ShardContext):
        self.shard = shard
        self.ctx = ctx
        self.no = shard.no
        self.lock = shard.lock
        self.arena = shard.arena
        self.slabs = shard.slabs
        self.meta = ctx.meta
        self.stats = ctx.meta.shard_stats(shard.no)   # this shard's stats words (S_*)
        self.wal_writer = shard.wal_writer
        self.replaced: list[int] = []   # segments merged away, not yet deleted (write_manifest)
        #: A manifest write failed (e.g. WAL truncation): the next round writes it again.
        self.manifest_pending = False
        self._spare_leaf = -1   # a leaf id taken by a split that did not publish
        #: Old slabs of leaves moved to another shard, freed once their copies
        #: are durable there (fusedb.shard.moving.free_orphans).
        self.orphans: list[tuple[int, tuple]] = []
        #: Merges published plus manifests written by this merger: a round that
        #: advanced it has written to the disk (fusedb.core.retry's recovery).
        self.progress = 0

    def snapshot_leaves(self) -> tuple[list[tuple], int, int]:
        """Raw state of the shard's leaves for the scheduler, under the lock
        (O(leaves)): rows of (leaf, has_frozen, has_active, active_fill, segids,
        writes, fills, active_wal_pos), the free slab count, and the database's
        leaf count. ``active_wal_pos`` is the WAL position of the active buffer's
        first record (-1: no active buffer, or an empty one)."""
        meta = self.meta
        # The routing table changes under the meta lock (splits of any shard), so
        # walking it needs that lock too; shard lock first, as everywhere. Only
        # bulk copies under the locks (numpy): the rows are built after.
        with self.lock:
            with self.ctx.meta_lock:
                _bounds, ids = meta.routes()
            cols = meta.copy_leaf_table(meta.hdr[M_NEXT_LEAF])
            hdrs = self.arena.copy_headers()
            free = self.arena.free_count()
        nslots, heap_bytes = self.arena.layout.nslots, self.arena.layout.heap_bytes
        shard, active, frozen = cols["shard"], cols["active"], cols["frozen"]
        segs, nsegs = cols["segs"], cols["nsegs"]
        rows = []
        for leaf in ids:
            if shard[leaf] != self.no:
                continue
            a = active[leaf]
            hdr = hdrs[a].tolist() if a >= 0 else None
            used = hdr[H_USED] if hdr else 0
            base = leaf * MAX_SEGS
            rows.append((leaf, frozen[leaf] >= 0, a >= 0,
                         max(used / nslots, hdr[H_HEAP] / heap_bytes) if hdr else 0.0,
                         segs[base:base + nsegs[leaf]].tolist(), cols["writes"][leaf],
                         cols["fills"][leaf],
                         hdr[H_FIRST_LO] | (hdr[H_FIRST_HI] << 32) if used else -1))
        return rows, free, len(ids)

    def merge_leaf(self, leaf: int, full: bool, split: bool = False,
                   write_manifest: bool = True) -> bool:
        """Merge the leaf's frozen buffer (freezing the active one if there is no
        frozen one) into its segments; with ``split``, also cut the leaf in two.

        ``full`` folds all segments into one and drops tombstones and expired
        entries; otherwise the buffer becomes one more segment. A split is always
        full: the merged data is written as two segments, one per half, at the key
        that halves its bytes. Returns whether anything was merged.

        Locking: one O(1) critical section to snapshot, none while merging and
        writing files, one to publish (plus the routing insert for a split).

        ``write_manifest=False`` leaves the manifest write (and the deletion of
        the segments the merge replaced) to a later :meth:`write_manifest`: the
        scheduler writes one manifest per round, not one per merge.

        Raises OSError if a segment cannot be written, or DiskError if the WAL
        cannot be made durable (the errors carry ``fusedb_step``, "merge" or
        "split"; see fusedb.core.retry). Then nothing was published: the frozen
        buffer stays for a retry and the attempt's segment files are removed.
        """
        meta, ctx = self.meta, self.ctx
        with self.lock:
            fz = meta.frozen[leaf]
            if fz < 0:
                a = meta.active[leaf]
                if a >= 0 and self.slabs[a].used():
                    self.shard.freeze_locked(leaf)
                    fz = a
                elif a >= 0:
                    meta.active[leaf] = -1
                    self.arena.release_slab(a)
            segids = meta.segs_of(leaf)
            with ctx.meta_lock:     # other shards' splits move routing entries
                lo, hi = meta.leaf_range(leaf)
        n = len(segids)
        if full or split:
            k = n
        else:
            sizes = [s.size for s in ctx.segments.open_segments(segids)]
            used = self.slabs[fz].hdr[H_HEAP] if fz >= 0 else 0
            k = fold_count(sizes, used, ctx.opts.max_segments)
        full = k == n
        if fz < 0 and not (full and (n > 1 or split)):
            return False
        # Inputs: the frozen buffer and the newest k segments (all of them for a
        # full merge); the output replaces them at the front of the list.
        inputs, keep = segids[:k], segids[k:]
        now = ctx.opts.clock()
        buf = [self.slabs[fz].to_run(copy=False)] if fz >= 0 else []
        fz_seq = int(buf[0].seq.max()) if buf and len(buf[0]) else 0
        key = None
        right = -1
        written: list[int] = []     # segment files of this attempt
        try:
            with step("split" if split else "merge"):
                if split and buf and n:
                    tail = self._tail(buf[0], segids, lo, hi, now)
                    if tail is not None and meta.bound_fits(tail[0]):
                        right = self._new_leaf_id()
                        if right >= 0:
                            # A sequential load: every buffered key lies above every
                            # key of the segments. They stay, unchanged, as the left
                            # leaf and the buffer alone becomes the right leaf:
                            # nothing is rewritten.
                            key, run = tail
                            inputs, keep = [], segids
                            new, new_right = [], self._write(run, written)
                            del run
                    del tail
                if key is None:
                    runs = buf + [s.to_run()
                                  for s in ctx.segments.open_segments(inputs, verify=True)]
                    out = cut(merge_runs(runs, now, drop_dead=full), lo, hi)
                    key = split_point(out, lo) if split else None
                    if key is not None and not meta.bound_fits(key):
                        key = None   # never happens (bound slots hold any stored key)
                    right = self._new_leaf_id() if key is not None else -1
                    if right < 0:
                        key = None
                        new = self._write(out, written)
                    else:
                        new = self._write(cut(out, lo, key), written)
                        new_right = self._write(cut(out, key, hi), written)
                    del runs, out
                del buf
                failpoints.hit("merge.before_publish")
                if key is not None:
                    failpoints.hit("split.before_publish")
                # The WAL is made durable up to here before the merge becomes
                # visible: a segment never holds a write the log could still lose,
                # so whatever manifest names it, the state after a power loss is a
                # prefix of the shard's history. (DiskError if it cannot be.)
                self.wal_writer.sync_now()
        except BaseException:
            # Nothing was published: the frozen buffer stays, the caller retries
            # later. This attempt's segment files are removed (a full disk needs
            # the space back), and its leaf id is kept for the next split.
            if right >= 0:
                self._spare_leaf = right
            self.discard_segments(written)
            raise
        with self.lock:
            failpoints.hit("merge.publish_locked")
            if key is not None and fz < 0 and meta.frozen[leaf] >= 0:
                # A writer froze a buffer while we merged (we held none): the split
                # could not freeze the active buffer now. Keep both halves as the
                # leaf's two segments; a later merge splits it.
                new, key = new + new_right, None
                self._spare_leaf = right
            meta.set_segs(leaf, new + keep)
            meta.mseq[leaf] = max(meta.mseq[leaf], fz_seq)
            if fz >= 0:
                meta.frozen[leaf] = -1
                self.unref_slab_locked(fz)
            self.stats[S_MERGES] += 1
            if key is not None:
                self._split_locked(leaf, right, key, new_right)
        self.progress += 1
        self.replaced += inputs
        if write_manifest:
            self.write_manifest()
        return True

    def write_manifest(self) -> None:
        """Write the manifest for the merges published since the last manifest,
        then delete the segment files they replaced (ShardContext.after_publish).
        Raises what that raises; the next call does it again."""
        replaced, self.replaced = self.replaced, []
        try:
            self.ctx.after_publish(replaced)
        except BaseException:
            self.replaced = replaced + self.replaced   # the next write deletes them
            self.manifest_pending = True   # even if none: the WAL is still to truncate
            raise
        self.manifest_pending = False
        self.progress += 1

    def _tail(self, buf, segids: list[int], lo: bytes, hi: bytes | None, now: float):
        """(smallest key, run): the frozen buffer ``buf`` sorted and cut to
        [lo, hi), dead entries dropped, if its smallest key is above the largest
        key of every segment in ``segids`` (an append: the run can become a leaf
        of its own, possibly empty); else None.

        The test looks at every buffered key, tombstones and expired entries
        included: a tombstone below the segments' top key shadows a value in
        them, and must not be dropped by a split that keeps those segments."""
        top = max((s.key(s.count - 1) for s in self.ctx.segments.open_segments(segids) if s.count),
                  default=None)
        if top is None:
            return None
        run = cut(merge_runs([buf], now, drop_dead=False), lo, hi)
        if not len(run) or run.key(0) <= top:
            return None
        # Every key is above the segments: nothing older can show through.
        key = run.key(0)
        dead = (run.kind == KIND_DEL) | ((run.exp != 0.0) & (run.exp <= now))
        return key, (run.take(np.flatnonzero(~dead)) if dead.any() else run)

    def flush_leaf(self, leaf: int) -> None:
        """Merge the leaf's frozen buffer, then its active one. With no
        concurrent writers (close) the leaf is left with no buffer at all."""
        meta = self.meta
        for _ in range(2):
            if meta.frozen[leaf] >= 0 or meta.active[leaf] >= 0:
                self.merge_leaf(leaf, False)

    def flush_all(self) -> None:
        """Merge every buffer of every leaf of the shard (close time: with no
        concurrent writers the leaves are left with no buffer at all)."""
        meta = self.meta
        with self.ctx.meta_lock:
            _bounds, ids = meta.routes()
        for leaf in ids:
            if meta.shard[leaf] == self.no:
                self.flush_leaf(leaf)

    def _split_locked(self, leaf: int, right: int, key: bytes, right_segs: list[int]) -> None:
        """Publish a split (under the lock, right after the leaf's merge published;
        the caller made sure the leaf has no frozen buffer). The left leaf keeps
        ``leaf``'s id and its new segments; the right leaf ``right`` gets ``right_segs``.
        The active buffer, which holds writes to both halves made during the merge,
        becomes the frozen buffer of *both* leaves (slab refcount 2); each leaf's
        next merge takes its own half of it. Writers of either half get fresh
        active buffers."""
        meta, ctx = self.meta, self.ctx
        assert meta.frozen[leaf] < 0
        a = meta.active[leaf]
        meta.init_leaf(right, self.no, meta.seq[leaf], right_segs)
        meta.mseq[right] = meta.mseq[leaf]
        if a >= 0 and self.slabs[a].used():
            self.shard.freeze_locked(leaf)
            self.slabs[a].hdr[H_REFS] = 2
            meta.frozen[right] = a
        elif a >= 0:
            meta.active[leaf] = -1
            self.arena.release_slab(a)
        with ctx.meta_lock:
            meta.route_split(leaf, key, right)
        self.stats[S_SPLITS] += 1

    def unref_slab_locked(self, sid: int) -> None:
        """Drop one leaf's reference to frozen slab ``sid``; free it at zero."""
        hdr = self.slabs[sid].hdr
        hdr[H_REFS] -= 1
        if hdr[H_REFS] == 0:
            self.arena.release_slab(sid)

    def _write(self, run, written: list[int]) -> list[int]:
        """Write ``run`` as a new segment (if it has entries); its id in a list,
        also appended to ``written``."""
        if not len(run):
            return []
        segid, nbytes = self.ctx.segments.write_new_segment(run)
        written.append(segid)
        with self.lock:
            self.stats[S_SEG_BYTES] += nbytes
            self.stats[S_SEG_FILES] += 1
        return [segid]

    def discard_segments(self, segids: list[int]) -> None:
        """Remove the segment files of a merge that did not publish. Best effort:
        a file that cannot be removed now is unreferenced garbage, which the next
        open deletes."""
        for segid in segids:
            self.ctx.segments.forget([segid])
            try:
                os.unlink(os.path.join(self.ctx.path, file_name(segid)))
            except OSError:
                pass

    def _new_leaf_id(self) -> int:
        """A leaf id for the right half of a split: the one a failed attempt
        took, if any (so retries under a full disk use up no ids), else a fresh
        one; -1 when max_leaves are in use."""
        leaf, self._spare_leaf = self._spare_leaf, -1
        if leaf >= 0:
            return leaf
        meta = self.meta
        with self.ctx.meta_lock:
            leaf = meta.hdr[M_NEXT_LEAF]
            if leaf >= meta.max_leaves:
                return -1
            meta.hdr[M_NEXT_LEAF] = leaf + 1
        return leaf
