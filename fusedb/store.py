"""The open database's internals: directory, shared memory, shards, workers,
segment cache and manifest. :class:`fusedb.db.FuseDB` is the API on top.

Lifecycle (docs/design.md, "Open and close"):

open   take the directory's LOCK (flock), remove shared-memory objects a crashed
       run left, read the MANIFEST, verify every segment it names, delete files
       it does not name, create the meta block, one arena and one lock per shard,
       start one worker per shard.
close  stop the workers, merge every buffer into segments, write the MANIFEST,
       unmap and unlink every shared-memory object, release LOCK.

Lock order, outermost first: manifest lock (a thread lock) -> shard locks in
shard order -> meta lock. Writers take one shard lock; a split takes its shard's
lock then the meta lock; the manifest writer takes every shard lock.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import threading
import weakref
from typing import Iterator

import numpy as np
import posix_ipc

from . import manifest
from .errors import DiskError, FuseDBError, LockedError
from .manifest import LeafRecord, ManifestData
from .options import Options
from .segment import Segment, file_name
from .shard.shard import Shard
from .shard.worker import Worker
from .shm import region
from .shm.arena import Arena
from .shm.slab import H_STATE, H_USED, STATE_FREE
from .wal import recovery
from .wal.reader import list_files as list_wal_files
from .wal.ring import R_FILE_NO, R_HEAD, Ring
from .wal.writer import Flusher
from .shm.meta import MAX_SEGS, M_NEXT_LEAF, M_NEXT_SEG, M_NLEAVES, Meta

LOCK_FILE = "LOCK"

# Databases still open at interpreter exit are closed (flushed, shared memory
# removed) so that a script that forgets close() leaves nothing in /dev/shm.
_open_stores: "weakref.WeakSet[Store]" = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    for store in list(_open_stores):
        store.close()


class Store:
    def __init__(self, path: str, opts: Options):
        self.opts = opts
        os.makedirs(path, exist_ok=True)
        self.path = os.path.realpath(path)
        self.error: BaseException | None = None
        self.segcache: dict[int, Segment] = {}
        self._segcache_lock = threading.Lock()
        self._manifest_lock = threading.Lock()
        self.workers: list[Worker] = []
        self.flushers: list[Flusher] = []
        self.replayed = 0
        self._lockfd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lockfd)
            raise LockedError(f"database {self.path} is open in another process") from None
        self._unlink: list[tuple[str, str]] = []
        self.meta = None
        self.meta_lock = None
        self.shards: list[Shard] = []
        try:
            self._open()
        except BaseException:
            self._release_shm()
            raise
        _open_stores.add(self)

    # -- open ---------------------------------------------------------------------------

    def _open(self) -> None:
        opts = self.opts
        self.tag = region.tag_for(self.path)
        recovery.salvage(self.tag, self.path)
        region.remove_leftovers(self.tag)
        man = manifest.read(self.path)
        if man is None:
            n = opts.shards
            man = ManifestData([LeafRecord(b"" if i == 0 else bytes([256 * i // n]), 0, [], i)
                                for i in range(n)], 1)
        referenced = {s for lf in man.leaves for s in lf.segs}
        for segid in sorted(referenced):
            self.segcache[segid] = Segment(os.path.join(self.path, file_name(segid)), segid)
        self._remove_garbage(referenced)
        self.replayed, next_wal = recovery.replay(self.path, man, self.segcache, opts.clock())
        referenced = {s for lf in man.leaves for s in lf.segs}
        first_wal_no = max(next_wal.values(), default=0)
        nleaves = len(man.leaves)
        max_key = max([opts.max_key_size] + [len(lf.lo) for lf in man.leaves])
        max_leaves = max(opts.max_leaves, nleaves)
        nm = region.name
        self.meta = meta = Meta(nm(self.tag, "meta"), max_leaves, max_key, opts.shards,
                                create=True)
        self._unlink.append(("shm", nm(self.tag, "meta")))
        # Embedded mode: one process owns the database (LOCK is held), so the shard
        # and meta locks are thread locks. A posix_ipc semaphore would work too, but
        # every acquire of one releases the GIL, so with the worker thread busy each
        # operation would pay a GIL hand-off (measured: ~65 us). Attached processes
        # (multiprocess mode) need the named semaphores of fusedb.shm.region.
        self.meta_lock = threading.Lock()
        for i in range(opts.shards):
            arena = Arena(nm(self.tag, f"arena{i}"), opts.slabs_per_arena, opts.buffer_bytes,
                          opts.buffer_slots, create=True)
            self._unlink.append(("shm", nm(self.tag, f"arena{i}")))
            ring = Ring(nm(self.tag, f"wal{i}"), opts.wal_ring_bytes, create=True)
            self._unlink.append(("shm", nm(self.tag, f"wal{i}")))
            ring.hdr[R_FILE_NO] = first_wal_no
            self.shards.append(Shard(self, i, threading.Lock(), arena, ring))
        # Leaves keep their shard if the shard count is unchanged; otherwise they are
        # dealt out again in contiguous runs (buffers are empty at open, so it is free).
        keep = man.options.get("shards") == opts.shards
        for leaf_id, lf in enumerate(man.leaves):
            shard = lf.shard if keep else leaf_id * opts.shards // nleaves
            meta.init_leaf(leaf_id, shard, lf.seq, lf.segs)
        meta.route_set([(lf.lo, i) for i, lf in enumerate(man.leaves)])
        meta.hdr[M_NEXT_LEAF] = nleaves
        meta.hdr[M_NEXT_SEG] = max([man.next_seg] + [s + 1 for s in referenced])
        for shard in self.shards:
            f = Flusher(self.path, shard.no, shard.ring, opts.durability, opts.sync_interval,
                        opts.wal_file_bytes)
            shard.flusher = f
            self.flushers.append(f)
            f.start()
        for shard in self.shards:
            w = Worker(self, shard)
            self.workers.append(w)
            w.start()

    def _remove_garbage(self, referenced: set[int]) -> None:
        """Delete temp files and segment files the manifest does not name."""
        for fn in os.listdir(self.path):
            if fn.endswith(".tmp"):
                os.unlink(os.path.join(self.path, fn))
            elif fn.startswith("seg-") and fn.endswith(".fseg"):
                try:
                    segid = int(fn[4:-5], 16)
                except ValueError:
                    continue
                if segid not in referenced:
                    os.unlink(os.path.join(self.path, fn))

    # -- used by shards and workers ------------------------------------------------------

    def wake(self, shard_no: int) -> None:
        if self.workers:
            self.workers[shard_no].wakeup.set()

    def kick_flusher(self, shard_no: int) -> None:
        if self.flushers:
            self.flushers[shard_no].kick.set()

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise FuseDBError(f"the background merge worker failed: {self.error!r}") \
                from self.error

    def new_segment_id(self) -> int:
        with self.meta_lock:
            segid = self.meta.hdr[M_NEXT_SEG]
            self.meta.hdr[M_NEXT_SEG] = segid + 1
        return segid

    def new_leaf_id(self) -> int:
        """A fresh leaf id, or -1 when max_leaves are in use."""
        with self.meta_lock:
            leaf = self.meta.hdr[M_NEXT_LEAF]
            if leaf >= self.meta.max_leaves:
                return -1
            self.meta.hdr[M_NEXT_LEAF] = leaf + 1
        return leaf

    def open_segments(self, segids: list[int]) -> list[Segment]:
        """The Segment objects of ``segids``, opening (and verifying) any not open yet."""
        cache = self.segcache
        out = []
        for segid in segids:
            seg = cache.get(segid)
            if seg is None:
                with self._segcache_lock:
                    seg = cache.get(segid)
                    if seg is None:
                        seg = Segment(os.path.join(self.path, file_name(segid)), segid)
                        cache[segid] = seg
            out.append(seg)
        return out

    def after_publish(self, replaced: list[int]) -> None:
        """After a merge or split published: make the manifest durable, then delete
        the segment files it no longer names (never before: a crash in between
        would leave a manifest naming deleted files)."""
        try:
            for f in self.flushers:
                f.sync_now()
        except DiskError:
            # The WAL cannot be made durable now, so no manifest may name the new
            # segments yet. The durable manifest still names the replaced ones:
            # keep them (garbage-collected at the next open). Writers see the
            # error through the flusher; the next publication retries.
            return
        referenced, floors = self.write_manifest()
        for shard, floor in zip(self.shards, floors):
            if shard.flusher is not None:
                shard.flusher.truncate(floor)
        for segid in replaced:
            if segid not in referenced:
                with self._segcache_lock:
                    self.segcache.pop(segid, None)
                os.unlink(os.path.join(self.path, file_name(segid)))

    @contextlib.contextmanager
    def all_shard_locks(self) -> Iterator[None]:
        taken = []
        try:
            for shard in self.shards:
                shard.lock.acquire()
                taken.append(shard.lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()

    def manifest_data(self) -> ManifestData:
        """A consistent copy of every leaf's range, seqno and segments.

        Copied as raw bytes under all shard locks (splits and publications need one
        of them), decoded after."""
        meta = self.meta
        mk = meta.max_key
        with self.all_shard_locks():
            # WAL floor per shard: the first record of any buffer not merged yet.
            # Every slab in use is some leaf's active or frozen buffer, so walking
            # the arena (a fixed, small number of slabs) finds them all.
            floors = []
            for shard in self.shards:
                firsts = [slab.first_pos() for slab in shard.slabs
                          if slab.hdr[H_STATE] != STATE_FREE and slab.hdr[H_USED]]
                floors.append(min(firsts, default=shard.ring.hdr[R_HEAD]))
            n = meta.hdr[M_NLEAVES]
            nl = meta.hdr[M_NEXT_LEAF]
            next_seg = meta.hdr[M_NEXT_SEG]
            blen = meta.bound_len[:n].tobytes()
            bounds = meta.bounds[:n * mk].tobytes()
            rleaf = meta.route_leaf[:n].tobytes()
            nsegs = meta.nsegs[:nl].tobytes()
            segs = meta.segs[:nl * MAX_SEGS].tobytes()
            mseq = meta.mseq[:nl].tobytes()
            shard = meta.shard[:nl].tobytes()
        blen_a = np.frombuffer(blen, np.uint32)
        rleaf_a = np.frombuffer(rleaf, np.uint32)
        nsegs_a = np.frombuffer(nsegs, np.uint32)
        segs_a = np.frombuffer(segs, np.uint64).reshape(nl, MAX_SEGS)
        mseq_a = np.frombuffer(mseq, np.uint64)
        shard_a = np.frombuffer(shard, np.uint32)
        leaves = []
        for i in range(n):
            leaf = int(rleaf_a[i])
            leaves.append(LeafRecord(bounds[i * mk:i * mk + int(blen_a[i])], int(mseq_a[leaf]),
                                     [int(s) for s in segs_a[leaf, :int(nsegs_a[leaf])]],
                                     int(shard_a[leaf])))
        return ManifestData(leaves, int(next_seg), {"shards": self.opts.shards}), floors

    def write_manifest(self) -> tuple[set[int], list[int]]:
        """Write the manifest; return the segment ids it names and, per shard, the
        WAL position below which every record is materialised in those segments."""
        with self._manifest_lock:
            data, floors = self.manifest_data()
            manifest.write(self.path, data)
        return {s for lf in data.leaves for s in lf.segs}, floors

    # -- close --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop workers, merge every buffer to segments, write the manifest, and
        remove all shared memory. Shared memory is removed even if the flush fails."""
        if self.meta is None:
            return
        _open_stores.discard(self)
        disk_error = None
        try:
            for w in self.workers:
                w.stop()
            self.workers = []
            # WAL first: what the ring holds reaches the file before merging, so a
            # failure below still leaves every acknowledged write in the log.
            for f in self.flushers:
                try:
                    f.stop()
                except DiskError as e:
                    disk_error = disk_error or e
            self.flushers = []
            if disk_error is not None:
                # The rings hold acknowledged records no file has: leave them in
                # /dev/shm for the next open to salvage (recovery.salvage).
                self._unlink = [(k, nm) for k, nm in self._unlink
                                if not nm.rsplit("-", 1)[-1].startswith("wal")]
            if self.error is None and disk_error is None:
                self._flush_all()
                self.write_manifest()
                # Every record is now in a segment named by a durable manifest.
                for files in list_wal_files(self.path).values():
                    for _no, path in files:
                        os.unlink(path)
        finally:
            self._release_shm()
        self.check()
        if disk_error is not None:
            raise disk_error

    def _flush_all(self) -> None:
        """Close-time flush, run by the closing thread after the workers stopped."""
        meta = self.meta
        for shard in self.shards:
            for pos in range(meta.hdr[M_NLEAVES]):
                leaf = meta.route_leaf[pos]
                if meta.shard[leaf] == shard.no:
                    shard.flush_leaf(leaf)

    def flush(self) -> None:
        """Have every worker merge all buffers to segments; wait for it."""
        events = [w.request_flush() for w in self.workers]
        for ev in events:
            while not ev.wait(0.1):
                self.check()
        self.check()

    def _release_shm(self) -> None:
        """Stop threads, unmap, unlink the shared-memory names, release LOCK. Every
        step runs even if an earlier one fails (a view still held by a live scan
        iterator makes an unmap fail); the first failure is raised at the end."""
        errors: list[BaseException] = []

        def attempt(fn, *args) -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - collected, the first one re-raised
                errors.append(e)

        # Names first: unlinking needs nothing else to succeed, and it is what
        # keeps /dev/shm clean whatever happens below.
        for kind, nm in self._unlink:
            if kind == "shm":
                attempt(posix_ipc.unlink_shared_memory, nm)
            else:
                attempt(posix_ipc.unlink_semaphore, nm)
        self._unlink = []

        for w in self.workers:
            attempt(w.stop)
        self.workers = []
        for f in self.flushers:
            f.stopping.set()
            f.kick.set()
            f.join()
            if f.fd >= 0:
                attempt(os.close, f.fd)
        self.flushers = []
        for seg in self.segcache.values():
            attempt(seg.close)
        self.segcache.clear()
        for shard in self.shards:
            attempt(shard.arena.close)
            attempt(shard.ring.close)
        self.shards = []
        if self.meta is not None:
            attempt(self.meta.close)
            self.meta = None
        if self._lockfd >= 0:
            attempt(fcntl.flock, self._lockfd, fcntl.LOCK_UN)
            attempt(os.close, self._lockfd)
            self._lockfd = -1
        if errors:
            raise errors[0]
