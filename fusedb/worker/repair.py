"""Rebuilding a shard after a process died holding its lock (the shard's worker
process only)."""

from __future__ import annotations

import bisect
import logging

from fusedb.core import manifest
from fusedb.errors import FuseDBError
from fusedb.shard.merging import Merger
from fusedb.shard.moving import settle_orphans_before_repair
from fusedb.shm.arena import A_FREE_TOP
from fusedb.shm.meta import M_NEXT_LEAF
from fusedb.shm.slab import H_STATE, STATE_FREE
from fusedb.wal import recovery
from fusedb.wal.reader import list_files as list_wal_files, read_file

log = logging.getLogger("fusedb")


def repair_shard(rt, merger: Merger) -> list[int]:
    """Rebuild ``merger``'s shard from disk after a process died holding its lock.

    ``rt``: the worker process's WorkerStore (fusedb.worker.role). The caller
    (the shard's worker, the only repairer, main thread) holds the lock, which
    it acquired after its holder died (ProcLock.acquire_for_repair). The
    shard's buffers may be half-written, so they are dropped: every
    acknowledged write is in the WAL ring (invariant 1). The ring is written
    out to the WAL file, the shard's leaves are read back from the durable
    MANIFEST, the WAL records newer than each leaf's segments are merged into
    new segments, and the result is published in shared memory (a fresh arena,
    new leaf entries, the shard's part of the routing table). Returns the
    segments the new ones replace, for ``rt.after_publish`` once the lock is
    released (with those the shard's merges replaced since their last manifest
    write). A record whose writer died before acknowledging it may or may not
    survive, as with any crash.

    Raises a transient OSError (nothing published; this attempt's files
    removed) to be retried; FuseDBError if no leaf id is left."""
    meta, opts = rt.meta, rt.opts
    shard = merger.shard
    no = shard.no
    shard.wal_writer.sync_now()
    if not settle_orphans_before_repair(merger, opts.lock_timeout):
        log.warning("shard %d: repair: another shard's WAL did not make a moved leaf's "
                    "copy durable within %.1f s; a power loss before it does may lose "
                    "that leaf's latest writes", no, opts.lock_timeout)
    man = manifest.read(rt.path)
    mine = [lf for lf in man.leaves if lf.shard == no]
    his = [i for i, lf in enumerate(man.leaves) if lf.shard == no]
    his_hi = [man.leaves[i + 1].lo if i + 1 < len(man.leaves) else None for i in his]
    files = list_wal_files(rt.path).get(no, [])
    wfs = [read_file(p, last=i == len(files) - 1) for i, (_n, p) in enumerate(files)]
    muts = recovery.newest_entries(wfs) if any(len(wf.muts) for wf in wfs) else None
    now = opts.clock()
    replaced: list[int] = []
    new_leaves = []
    written: list[int] = []
    segments = rt.segments
    try:
        for lf, hi in zip(mine, his_hi):
            segs, seq = list(lf.segs), lf.seq
            if muts is not None:
                out, seq = recovery.fold_leaf(
                    muts, lf.lo, hi, lf.seq,
                    lambda segids=lf.segs: [seg.to_run() for seg in
                                            segments.open_segments(segids, verify=True)],
                    now)
                if out is not None:
                    replaced += segs
                    segs = []
                    if len(out):
                        segid, _nbytes = segments.write_new_segment(out)
                        written.append(segid)
                        segs = [segid]
                    del out
            new_leaves.append((lf.lo, seq, segs))
    except BaseException:
        # Nothing is published yet: remove this attempt's files (a disk error
        # is retried by the worker, and a full disk needs the space back).
        merger.discard_segments(written)
        raise
    del muts, wfs
    # Publish, in one meta-lock section (a split of another shard must not slip
    # in between reading the routing table and writing it): the shard's leaf
    # ids are reused, new ones taken if it had fewer; a fresh arena.
    arena = shard.arena
    for i in range(arena.nslabs):
        arena.free[i] = arena.nslabs - 1 - i
        shard.slabs[i].hdr[H_STATE] = STATE_FREE
    arena.hdr[A_FREE_TOP] = arena.nslabs
    with rt.meta_lock:
        bounds, ids = meta.routes()
        entries, old_ids = settle_routes(meta, man, no, bounds, ids)
        while len(old_ids) < len(new_leaves):
            leaf = meta.hdr[M_NEXT_LEAF]
            if leaf >= meta.max_leaves:
                raise FuseDBError("repair needs a leaf id and max_leaves are in use")
            meta.hdr[M_NEXT_LEAF] = leaf + 1
            old_ids.append(leaf)
        for leaf, (lo, seq, segs) in zip(old_ids, new_leaves):
            meta.init_leaf(leaf, no, seq, segs)
            entries.append((lo, leaf))
        entries.sort()
        meta.route_write(entries)
    rt.repairs += 1
    # Segments a merge of this shard replaced whose manifest was not written yet
    # (the round stopped at the dead holder's lock) are superseded too: the
    # caller deletes them once, with the repair's, unless the new state names
    # them. Left in merger.replaced, the next manifest write would delete them again.
    replaced += [s for s in merger.replaced if s not in replaced]
    merger.replaced = []
    return replaced


def settle_routes(meta, man, no: int, bounds: list[bytes], ids: list[int]):
    """The routing entries a repair of shard ``no`` keeps, and the leaf ids it
    may reuse: (entries, ids). Caller holds the meta lock.

    The durable manifest ``man`` says which ranges the shard owns; the repair
    rebuilds exactly those. Shared memory may disagree with it about a leaf's
    owner only when a process died in the middle of moving that leaf
    (fusedb.shard.moving), holding the locks of both shards, so both are
    being repaired: a leaf shared memory gives to this shard but the manifest
    to another is handed to that one, its buffers dropped (they were this
    shard's slabs; that shard's repair rebuilds it from disk, and until then
    its lock, held by the dead process, keeps every operation out); a leaf of
    another shard whose range the manifest gives to this one is dropped, as
    the rebuilt leaf replaces it. Otherwise this shard's leaves are replaced
    and the others' kept, as before moves existed."""
    mine = {lf.lo for lf in man.leaves if lf.shard == no}
    los = [lf.lo for lf in man.leaves]
    entries, reuse = [], []
    for lo, leaf in zip(bounds, ids):
        if meta.shard[leaf] == no:
            i = bisect.bisect_right(los, lo) - 1
            owner = man.leaves[max(i, 0)].shard
            if owner == no or lo in mine:
                reuse.append(leaf)
                continue
            meta.shard[leaf] = owner
            meta.active[leaf] = -1
            meta.frozen[leaf] = -1
            entries.append((lo, leaf))
        elif lo not in mine:
            entries.append((lo, leaf))
    return entries, reuse
