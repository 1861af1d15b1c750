"""Recovery at open: salvage rings a killed process left in shared memory, then
fold the WAL into the leaves' segments.

1. *Salvage.* For each ``wal<i>`` ring of a crashed run still in /dev/shm, the
   bytes ``[written, head)`` (acknowledged but not yet written) are appended to
   that shard's current WAL file, after cutting the file back to ``written`` (a
   WAL writer killed mid-write may have left a partial copy).
2. *Replay.* Every WAL file is framed (a torn tail of a shard's last file is cut
   off; other damage raises CorruptionError), all mutations are decoded into one
   run, deduplicated newest-first, cut by leaf, and the entries newer than the
   leaf's materialised seqno are merged into a new segment for the leaf:
   vectorised, one merge per touched leaf.
3. The manifest is written, then the WAL files are deleted.
"""

from __future__ import annotations

import os

import numpy as np

from fusedb.core import manifest as manifest_mod
from fusedb.core.fileio import create, fsync_dir, write_all
from fusedb.core.manifest import ManifestData
from fusedb.core.merge import cut, merge_runs, newest_per_key
from fusedb.core.run import Run, compact, concat
from fusedb.core.segment import Segment, file_name as seg_file_name, write_segment
from fusedb.shm import region
from fusedb.wal.format import FILE_HEADER, file_name, write_file_header
from fusedb.wal.reader import decode, fill_hashes, list_files, read_file
from fusedb.wal.ring import R_FILE_NO, R_FILE_START, R_WRITTEN, R_HEAD, Ring


def salvage(tag: str, dirpath: str) -> int:
    """Append what stale rings hold to their WAL files; return bytes salvaged."""
    total = 0
    for kind, nm in region.leftovers(tag):
        what = nm.rsplit("-", 1)[-1]
        if kind != "shm" or not what.startswith("wal") or not what[3:].isdigit():
            continue
        shard = int(what[3:])
        try:
            ring = Ring(nm)
        except ValueError:
            continue   # another layout version: nothing we can read
        try:
            hdr = ring.hdr
            head, written = hdr[R_HEAD], hdr[R_WRITTEN]
            path = os.path.join(dirpath, file_name(shard, hdr[R_FILE_NO]))
            fd = create(path, os.O_RDWR)
            try:
                if os.fstat(fd).st_size < FILE_HEADER.size:
                    os.ftruncate(fd, 0)
                    write_file_header(fd, shard, hdr[R_FILE_NO], hdr[R_FILE_START], os.write)
                keep = FILE_HEADER.size + (written - hdr[R_FILE_START])
                if os.fstat(fd).st_size > keep:
                    os.ftruncate(fd, keep)
                os.lseek(fd, 0, os.SEEK_END)
                for chunk in ring.chunks(written, head):
                    with chunk:
                        total += write_all(fd, chunk, os.write)
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            ring.close()
    if total:
        fsync_dir(dirpath)
    return total


def newest_entries(wfs: list) -> Run:
    """The newest entry per key in framed WAL files ``wfs``, sorted by key: file
    by file (no copy of the files' bytes; a file is in log order), then across
    files by seqno. A key's records may lie in two shards' files: a leaf that
    moved to another shard (docs/design.md, "Balancing") left its older records
    in the first shard's WAL and logs the newer ones, and its buffered state
    again, in the second's. A key's seqnos only grow (a leaf keeps its seqno
    counter through splits and moves), so the highest seqno is the newest; an
    equal seqno in two files is the same state (a move's re-logged copy)."""
    parts = [compact(newest_per_key(decode([wf]))) for wf in wfs]
    both = concat(parts)[0]
    if len(parts) > 1:
        both = both.take(np.argsort(both.seq, kind="stable"))
    return newest_per_key(both)


def fold_leaf(latest: Run, lo: bytes, hi: bytes | None, seq: int, segment_runs,
              now: float) -> tuple[Run | None, int]:
    """Fold the WAL entries of leaf [lo, hi) newer than its materialised seqno
    ``seq`` into its segments. ``latest`` is :func:`newest_entries`' run;
    ``segment_runs()`` returns the leaf's segment runs (called only if needed).
    Returns (the leaf's merged entries, to write as its one new segment, or None
    if the WAL has nothing newer for it; the leaf's new seqno)."""
    part = cut(latest, lo, hi)
    if len(part):
        part = part.take(np.flatnonzero(part.seq > np.uint64(seq)))
    if not len(part):
        return None, seq
    out = fill_hashes(merge_runs([part] + segment_runs(), now, drop_dead=True))
    return out, max(seq, int(part.seq.max()))


def replay(dirpath: str, man: ManifestData, segments: dict[int, Segment],
           now: float) -> tuple[int, dict[int, int]]:
    """Fold every WAL file of ``dirpath`` into ``man``'s leaves (updating ``man`` and
    ``segments`` in place, writing the manifest if anything changed) and delete
    the files. Returns (mutations replayed, next WAL file number per shard)."""
    files = list_files(dirpath)
    next_no = {shard: lst[-1][0] + 1 for shard, lst in files.items()}
    wfs = []
    for _shard, lst in files.items():
        for i, (_no, path) in enumerate(lst):
            wf = read_file(path, last=i == len(lst) - 1)
            wfs.append(wf)
    n = sum(len(wf.muts) for wf in wfs)
    replaced: list[int] = []
    if n:
        latest = newest_entries(wfs)
        for i, leaf in enumerate(man.leaves):
            hi = man.leaves[i + 1].lo if i + 1 < len(man.leaves) else None
            out, leaf_seq = fold_leaf(
                latest, leaf.lo, hi, leaf.seq,
                lambda leaf=leaf: [segments[s].to_run() for s in leaf.segs], now)
            if out is None:
                continue
            new = []
            if len(out):
                segid = man.next_seg
                man.next_seg += 1
                write_segment(os.path.join(dirpath, seg_file_name(segid)), out)
                segments[segid] = Segment(os.path.join(dirpath, seg_file_name(segid)), segid)
                new = [segid]
            del out
            replaced += leaf.segs
            leaf.segs = new
            leaf.seq = leaf_seq
        del latest
    if n or replaced:
        manifest_mod.write(dirpath, man)
    for segid in replaced:
        segments.pop(segid).close()
        os.unlink(os.path.join(dirpath, seg_file_name(segid)))
    for wf in wfs:
        os.unlink(wf.path)
    if wfs:
        fsync_dir(dirpath)
    return n, next_no
