"""The per-process segment cache: segment id -> open (mmapped) Segment."""

from __future__ import annotations

import contextlib
import os
import threading
import time

from fusedb.core.segment import Segment, file_name, write_segment
from fusedb.errors import CorruptionError
from fusedb.shm.meta import M_NEXT_LEAF, M_NEXT_SEG


class SegmentCache:
    """The segments this process has open. One per open database per process,
    built by its role; used by every thread of the process: readers look up
    :attr:`segs` under a shard lock (a dict read), open missing ones with no
    lock held (:meth:`open_segments` takes the cache's own lock to insert);
    the merge loop writes and forgets segments. ``meta_lock`` (the database's
    meta lock) is taken only to draw a segment id."""

    def __init__(self, path: str, meta, meta_lock, segs: dict[int, Segment]):
        self.path = path
        self.meta = meta
        self.meta_lock = meta_lock
        #: segment id -> Segment (``Runtime.segcache`` is this dict).
        self.segs = segs
        self._lock = threading.Lock()
        self._opened = 0

    def open_segments(self, segids: list[int], missing_ok: bool = False,
                      verify: bool = False) -> list[Segment] | None:
        """The Segment objects of ``segids``, opening any not open yet (checking
        header and footer; with ``verify``, also each file's checksum: a merge
        verifies its inputs). With ``missing_ok``, a file deleted meanwhile
        (another process merged it away after the caller read the leaf's list)
        returns None instead of raising: the caller reads the leaf's list again.
        Raises CorruptionError for a bad or missing file."""
        cache = self.segs
        out = []
        for segid in segids:
            seg = cache.get(segid)
            if seg is None:
                with self._lock:
                    seg = cache.get(segid)
                    if seg is None:
                        path = os.path.join(self.path, file_name(segid))
                        try:
                            seg = Segment(path, segid, verify=False)
                        except CorruptionError:
                            if missing_ok and not os.path.exists(path):
                                return None   # merged away by another process meanwhile
                            raise
                        cache[segid] = seg
                        self._opened += 1
                        if self._opened % 32 == 0:
                            self.prune()
            if verify:
                seg.verify()
            out.append(seg)
        return out

    def open_for_retry(self, segids: list[int], attempt: int) -> None:
        """For a reader that found a leaf's segments not open in this process yet
        (it retries its operation after this). A file deleted meanwhile (another
        process merged it away after the reader saw it named) is skipped and the
        reader looks again; after 100 attempts a missing file is corruption."""
        if self.open_segments(segids, missing_ok=attempt < 100) is None:
            time.sleep(0.0005)

    def prune(self) -> None:
        """Drop cached segments no leaf names any more (merged away by another
        process), so a long-lived process does not keep deleted files mapped. A
        concurrent reader still holding one keeps its mapping until it is done;
        a segment dropped by a racy read of the leaf table is simply reopened."""
        meta = self.meta
        nl = meta.hdr[M_NEXT_LEAF]
        live = set()
        for leaf in range(nl):
            live.update(meta.segs_of(leaf))
        for segid in [s for s in self.segs if s not in live]:
            del self.segs[segid]

    def forget(self, segids: list[int]) -> None:
        """Drop segments no leaf names any more from this process's cache (the
        mapping is freed when the last reader lets go of it)."""
        with self._lock:
            for segid in segids:
                self.segs.pop(segid, None)

    def write_new_segment(self, run) -> tuple[int, int]:
        """Write ``run`` as a segment under a fresh id and open it here, marked
        verified (this process checksummed the very bytes it wrote). Returns
        (segment id, file size in bytes). Raises OSError if it cannot be written
        (the file is then removed)."""
        with self.meta_lock:
            segid = self.meta.hdr[M_NEXT_SEG]
            self.meta.hdr[M_NEXT_SEG] = segid + 1
        path = os.path.join(self.path, file_name(segid))
        nbytes = write_segment(path, run)
        try:
            seg, = self.open_segments([segid])
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)     # else garbage, deleted at the next open
            raise
        seg.verified = True
        return segid, nbytes
