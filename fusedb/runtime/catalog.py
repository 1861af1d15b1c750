"""The MANIFEST while the database is open: what it records, writing it, and what
follows a write (WAL truncation, deletion of the segments it no longer names).

Functions of the process's runtime ``rt`` (fusedb.runtime.state.Runtime; not
imported: the runtime imports this module). Called by the merge loop (through
ShardContext.after_publish), the worker process's repair, the router (at open
and close) and the embedded close.
"""

from __future__ import annotations

import contextlib
import os

from fusedb.core import failpoints, manifest, retry
from fusedb.core.manifest import LeafRecord, ManifestData
from fusedb.core.segment import file_name
from fusedb.shm.meta import M_NEXT_SEG
from fusedb.shm.slab import H_STATE, H_USED, STATE_FREE
from fusedb.wal.reader import list_files as list_wal_files
from fusedb.wal.ring import R_HEAD


def manifest_data(rt, moved: dict[int, int] | None = None) -> tuple[ManifestData, list[int]]:
    """A copy of every leaf's range, seqno and segments, and per shard the WAL
    position below which every record is materialised in those segments.
    ``moved``: leaf id -> shard, owners to record instead of the current ones
    (a leaf move stages the manifest of its outcome, see :func:`stage_move`).

    Each shard is copied under its own lock (its merges, splits and repairs
    happen under it), one shard at a time, so no process ever waits on two
    shard locks; shards own disjoint key ranges, and the caller holds the
    manifest lock, which every leaf move holds too, so the copies fit together."""
    meta = rt.meta
    leaves: list[LeafRecord] = []
    floors = []
    for shard in rt.shards:
        with shard.lock:
            # The first record of any buffer not merged yet. Every slab in use is
            # some leaf's active or frozen buffer, so walking the arena (a fixed,
            # small number of slabs) finds them all.
            firsts = [slab.first_pos() for slab in shard.slabs
                      if slab.hdr[H_STATE] != STATE_FREE and slab.hdr[H_USED]]
            floors.append(min(firsts, default=shard.ring.hdr[R_HEAD]))
            with rt.meta_lock:
                bounds, ids = meta.routes()
            for lo, leaf in zip(bounds, ids):
                if meta.shard[leaf] == shard.no:
                    owner = moved.get(leaf, shard.no) if moved else shard.no
                    leaves.append(LeafRecord(lo, meta.mseq[leaf], meta.segs_of(leaf), owner))
    with rt.meta_lock:
        next_seg = meta.hdr[M_NEXT_SEG]
    leaves.sort(key=lambda lf: lf.lo)
    return ManifestData(leaves, next_seg, {"shards": meta.shards}), floors


def write_manifest(rt) -> tuple[set[int], list[int]]:
    """Write the manifest (under the manifest lock); return the segment ids it
    names and the WAL floors. Raises OSError labelled "manifest write"."""
    with rt.manifest_lock:
        data, floors = manifest_data(rt)
        with retry.step("manifest write"):
            manifest.write(rt.path, data)
    return {s for lf in data.leaves for s in lf.segs}, floors


def stage_move(rt, leaf: int, dst: int) -> None:
    """Stage (write and fsync as ``MANIFEST.tmp``) the manifest of the database
    with ``leaf`` owned by shard ``dst``; the move renames it under the shard
    locks (``manifest.commit``). Caller holds the manifest lock. Raises OSError
    labelled "manifest write" (nothing staged)."""
    data, _floors = manifest_data(rt, {leaf: dst})
    with retry.step("manifest write"):
        manifest.stage(rt.path, data)


def after_publish(rt, replaced: list[int]) -> None:
    """After a merge or split published: make the manifest durable, drop the WAL
    files it covers (those of the WAL writers this process runs), then delete
    the segment files it no longer names (never before: a crash in between would
    leave a manifest naming deleted files).

    Raises OSError (labelled with its step, fusedb.core.retry) if a step fails;
    every step can simply be run again (the caller keeps ``replaced`` for
    that): the manifest is rewritten whole, and a file deleted by the failed
    attempt is skipped."""
    referenced, floors = write_manifest(rt)
    with retry.step("WAL truncation"):
        for f in rt.wal_writers:
            f.truncate(floors[f.shard])
    with retry.step("segment deletion"):
        for segid in replaced:
            if segid not in referenced:
                rt.segments.forget([segid])
                failpoints.hit("segment.before_unlink")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(rt.path, file_name(segid)))


def delete_wal(path: str) -> None:
    """Every record is in a segment named by a durable manifest: drop the WAL."""
    for files in list_wal_files(path).values():
        for _no, p in files:
            os.unlink(p)
