"""Moving a leaf to another shard, online (shard balancing; docs/design.md,
"Balancing"). Run by the source shard's merge loop when the balance policy
(fusedb.core.balance) says so.

What a leaf is made of, and where each part goes:

* its **segments** are files of the database directory, owned by no shard:
  they stay;
* its **frozen buffer**: a move waits for none (the policy moves a leaf right
  after its merge);
* its **active buffer** is a slab of the source shard's arena, and the records
  that built it are in the source shard's WAL. Under both shard locks the slab
  is copied byte for byte into a slab of the destination's arena, and its
  entries are logged again, with their seqnos, as one record in the
  destination's WAL ring (at most one buffer: invariant 2's bound). From then
  on the destination shard holds everything of the leaf that its segments do
  not: its repair, recovery and WAL truncation need nothing of the source's.
  Recovery takes a key's highest seqno across shards (fusedb.wal.recovery), and
  the copy repeats the seqnos of the records it copies, so either is right;
* its **row** in the leaf table changes owner and the route version is bumped,
  so an operation that routed to the old shard finds the version changed under
  the lock and routes again (the executor's MOVED);
* the **manifest** of the outcome is written and fsynced as ``MANIFEST.tmp``
  before the locks are taken, and renamed over ``MANIFEST`` under them, just
  before the row changes owner. So whenever no process holds both locks, the
  durable manifest and shared memory agree on the leaf's owner: a repair
  (fusedb.worker.repair), which reads the manifest, needs nothing else. A
  process that dies in between holds both locks, so both shards are repaired,
  each from that manifest (the repair settles a leaf the two disagree on).

The old slab is not freed at once: it holds the source shard's WAL floor
(fusedb.runtime.catalog) over the records it was built from until the
destination's copy of them is as durable as they were (``orphans``; freed by
a later round, :func:`free_orphans`). A worker that died before freeing them
finds such slabs when it starts again (:func:`adopt_orphans`).

Lock order: the manifest lock, then both shard locks in ascending order, then
the meta lock, as everywhere (docs/design.md, "Who touches what under which lock").
"""

from __future__ import annotations

import time

import numpy as np

from fusedb.core import failpoints, manifest
from fusedb.core.entry import KIND_INT
from fusedb.core.fileio import fsync_dir
from fusedb.core.layout import M_ROUTE_VER, S_MOVES
from fusedb.errors import InvalidArgumentError
from fusedb.shm.slab import H_LEAF, H_REFS, H_STATE, STATE_ACTIVE, STATE_FREE, \
    STATE_FROZEN
from fusedb.wal.format import pad16
from fusedb.wal.ring import R_DURABLE, R_HEAD, R_WRITTEN, encode_mutations


def relog_entries(slab, slots) -> list[tuple]:
    """The entries of ``slab``'s ``slots`` as WAL mutations (seq, exp, kind, key,
    value, ivalue), each with the seqno of its slot's last mutation."""
    heap = slab.heap
    out = []
    for s in slots:
        k = slab.koff[s]
        key = bytes(heap[k:k + slab.klen[s]])
        kind = slab.kind[s]
        if kind == KIND_INT:
            out.append((slab.seq[s], slab.exp[s], kind, key, None, slab.int_value(s)))
        else:
            out.append((slab.seq[s], slab.exp[s], kind, key, slab.value(s), 0))
    return out


def move_leaf(merger, leaf: int, dst: int) -> bool:
    """Move ``leaf`` from ``merger``'s shard to shard ``dst``. Returns whether it
    moved: not if the leaf is no longer this shard's, has a frozen buffer, changed
    since the manifest was staged, or the destination has no free slab or WAL
    ring room for its active buffer now (the policy tries again later).

    The active buffer's entries are encoded with no lock held, from a private
    copy of its slab taken under the source's lock (a memcpy); under both locks
    only the entries written since (their slots' seqnos are higher) are encoded,
    and the record is appended as one copy (fusedb.wal.ring.Ring.append_encoded).

    Raises OSError (labelled "manifest write") if the manifest cannot be
    staged: nothing changed."""
    ctx, meta = merger.ctx, merger.meta
    src = merger.shard
    if dst == src.no:
        return False
    to = ctx.shards[dst]
    moved = False
    with ctx.manifest_lock:
        with src.lock:
            if meta.shard[leaf] != src.no or meta.frozen[leaf] >= 0:
                return False
            segs, mseq, a = meta.segs_of(leaf), meta.mseq[leaf], meta.active[leaf]
            snap = snap_seq = None
            if a >= 0:
                snap, snap_seq = src.slabs[a].snapshot(), meta.seq[leaf]
        blob = encode_mutations(relog_entries(snap, range(snap.used()))) if snap else b""
        count = snap.used() if snap else 0
        ctx.stage_move(leaf, dst)
        try:
            failpoints.hit("move.staged")
            first, second = sorted((src, to), key=lambda sh: sh.no)
            with first.lock, second.lock:
                moved = _move_locked(merger, leaf, to, (segs, mseq, a),
                                     (blob, count, snap_seq))
        finally:
            if not moved:
                manifest.discard(ctx.path)
        failpoints.hit("move.before_dir_fsync")
        fsync_dir(ctx.path)
    return moved


def _move_locked(merger, leaf: int, to, seen: tuple, relog: tuple) -> bool:
    """The move under both shard locks (see the module doc); False, changing
    nothing, if it cannot be done now. ``seen``: the leaf's segments, seqno and
    active slab when the manifest was staged; ``relog``: its active buffer's
    entries then, encoded, their count and the leaf's seqno then."""
    ctx, meta = merger.ctx, merger.meta
    src = merger.shard
    failpoints.hit("move.locked")
    segs, mseq, a = seen
    if (meta.shard[leaf] != src.no or meta.frozen[leaf] >= 0 or meta.segs_of(leaf) != segs
            or meta.mseq[leaf] != mseq or meta.active[leaf] != a):
        return False
    old = src.slabs[a] if a >= 0 else None
    new = -1
    end = 0
    if old is not None and old.used():
        blob, count, snap_seq = relog
        since = np.flatnonzero(np.frombuffer(old.seq, np.uint64, old.used()) > snap_seq)
        if len(since):
            blob = blob + encode_mutations(relog_entries(old, since.tolist()))
            count += len(since)
        if not to.ring.has_room(pad16(32 + len(blob))):
            ctx.kick_wal_writer(to.no)
            return False
        new = to.arena.alloc(leaf)
        if new < 0:
            ctx.wake(to.no)
            return False
        start = to.ring.hdr[R_HEAD]
        try:
            end = to.ring.append_encoded(blob, count)
        except InvalidArgumentError:
            end = -1      # a buffer over half the destination's ring: it stays
        if end < 0:
            to.arena.release_slab(new)
            return False
        failpoints.hit("move.relogged")
        slab = to.slabs[new]
        slab.copy_from(old)
        slab.hdr[H_LEAF] = leaf
        slab.hdr[H_STATE] = STATE_ACTIVE
        slab.hdr[H_REFS] = 0
        slab.set_first_pos(start)
        ctx.kick_wal_writer(to.no)
    try:
        manifest.commit(ctx.path)
    except BaseException:
        # The rename failed (EIO, say): the leaf stays; the copy logged in the
        # destination's WAL repeats seqnos the source has, so it is harmless.
        if new >= 0:
            to.arena.release_slab(new)
        raise
    # From here on nothing can fail but a process death (both shards repaired).
    failpoints.hit("move.renamed")
    with ctx.meta_lock:
        meta.shard[leaf] = to.no
        meta.active[leaf] = new
        meta.hdr[M_ROUTE_VER] += 2      # every cached route rechecks (even: no seqlock)
    if old is not None:
        if old.used():
            # Freed by free_orphans once the destination's copy is durable.
            old.hdr[H_STATE] = STATE_FROZEN
            old.hdr[H_REFS] = 0
            merger.orphans.append((a, ((to.no, end),)))
        else:
            src.arena.release_slab(a)
    merger.stats[S_MOVES] += 1
    return True


def _durable(shard, pos: int, mode: str) -> bool:
    """Whether ``shard``'s WAL holds stream position ``pos`` as durably as the
    database's durability mode promises (``none``: written to the file)."""
    hdr = shard.ring.hdr
    return (hdr[R_WRITTEN] if mode == "none" else hdr[R_DURABLE]) >= pos


def free_orphans(merger) -> None:
    """Free the old slabs of leaves moved away whose copies are now durable
    (each takes the shard lock for O(1)); kick the WAL writers of the others.
    ``merger.orphans``: (slab id, ((shard, WAL position), ...)): the slab may go
    once each of those shards' WAL is durable up to its position."""
    if not merger.orphans:
        return
    ctx = merger.ctx
    mode = ctx.opts.durability
    keep = []
    for sid, waits in merger.orphans:
        late = [no for no, pos in waits if not _durable(ctx.shards[no], pos, mode)]
        if late:
            for no in late:
                ctx.kick_wal_writer(no)
            keep.append((sid, waits))
            continue
        with merger.lock:
            slab = merger.slabs[sid]
            # Still the old slab of a leaf that left this shard (a repair of the
            # shard empties merger.orphans with the arena, so this is a check).
            if (slab.hdr[H_STATE] == STATE_FROZEN and slab.hdr[H_REFS] == 0
                    and merger.meta.shard[slab.hdr[H_LEAF]] != merger.no):
                merger.arena.release_slab(sid)
    merger.orphans = keep


def adopt_orphans(merger) -> None:
    """At the start of a shard's merge loop: slabs of this shard's arena that no
    leaf uses (a move's old slabs, left by a worker that died before freeing
    them) become orphans, freed by :func:`free_orphans` once every other shard's
    WAL is durable up to its head of now, which covers any copy a move made."""
    meta, ctx = merger.meta, merger.ctx
    with merger.lock:
        with ctx.meta_lock:
            _bounds, ids = meta.routes()
        used = set()
        for leaf in ids:
            if meta.shard[leaf] == merger.no:
                used.update(s for s in (meta.active[leaf], meta.frozen[leaf]) if s >= 0)
        lost = [slab for slab in merger.slabs
                if slab.hdr[H_STATE] != STATE_FREE and slab.sid not in used]
        for slab in lost:
            slab.hdr[H_STATE] = STATE_FROZEN
            slab.hdr[H_REFS] = 0
    waits = tuple((sh.no, sh.ring.hdr[R_HEAD]) for sh in ctx.shards if sh.no != merger.no)
    merger.orphans += [(slab.sid, waits) for slab in lost]


def settle_orphans_before_repair(merger, timeout: float) -> bool:
    """Before a repair of ``merger``'s shard rebuilds its arena (and with it the
    old slabs of moved leaves, which hold its WAL floor): wait, at most
    ``timeout`` seconds, until every copy they wait for is durable, so the WAL
    they hold may go. Returns whether they all were; forgets them either way
    (the rebuilt arena has none). Called under the shard's lock: the
    destinations' WAL writers need no lock of it."""
    ctx = merger.ctx
    mode = ctx.opts.durability
    deadline = time.monotonic() + timeout
    ok = True
    for _sid, waits in merger.orphans:
        for no, pos in waits:
            while not _durable(ctx.shards[no], pos, mode):
                if time.monotonic() > deadline:
                    ok = False
                    break
                ctx.kick_wal_writer(no)
                time.sleep(0.005)
    merger.orphans = []
    return ok
