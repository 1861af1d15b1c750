"""The embedded role: one process owns the database; threads do the
background work (one merge loop and one WAL writer per shard)."""

from __future__ import annotations

import os
import threading
import traceback

from fusedb.core import retry
from fusedb.errors import DiskError
from fusedb.options import Options
from fusedb.runtime import bootstrap, catalog
from fusedb.runtime.segcache import SegmentCache
from fusedb.runtime.state import Attempts, Runtime, flush_failed
from fusedb.shard.merging import Merger
from fusedb.shard.shard import Shard
from fusedb.shard.worker import Worker
from fusedb.wal.writer import WalWriter


class EmbeddedStore(Runtime):
    """An embedded database, opened by ``fusedb.open`` (no ``shards``) on the
    calling thread. Locks are thread locks (see docs/design.md, "Why the
    embedded locks are thread locks"). Any thread may call :meth:`flush`;
    :meth:`close` runs on one thread, after every other call returned (the
    FuseDB contract). ``workers``/``mergers``/``wal_writers``: per shard, its merge
    loop thread, its Merger and its WAL writer thread."""

    multiprocess = False

    def __init__(self, path: str, opts: Options):
        super().__init__(path, opts)
        self.workers: list[Worker] = []
        self.mergers: list[Merger] = []
        self.lockfile = bootstrap.lock_directory(self.path, opts)
        bootstrap.open_owned(self, self._open)

    def _open(self) -> None:
        opts = self.opts
        rec, arenas, rings = bootstrap.recover_and_map(self)
        bootstrap.load_leaves(self.meta, rec, rings, opts.shards)
        # One process owns the database (LOCK is held), so the locks are thread
        # locks. A posix_ipc semaphore works too, but every acquire of one
        # releases the GIL: with the worker thread busy each operation would pay
        # a GIL hand-off (measured: ~65 us).
        self.meta_lock = threading.Lock()
        self.manifest_lock = threading.Lock()
        self.wake_events = [threading.Event() for _ in range(opts.shards)]
        self.kick_events = [threading.Event() for _ in range(opts.shards)]
        self.segments = SegmentCache(self.path, self.meta, self.meta_lock, self.segcache)
        for i in range(opts.shards):
            ring = rings[i]
            f = WalWriter(self.path, i, ring, opts.durability, opts.sync_interval,
                        opts.wal_file_bytes, kick=self.kick_events[i],
                        faults=self.meta.shard_faults(i),
                        limit=opts.wal_limit_bytes, wake=self.wake_events[i])
            self.wal_writers.append(f)
            self.shards.append(Shard(self, i, threading.Lock(), arenas[i], ring, f))
        for f in self.wal_writers:
            f.start()
        for shard in self.shards:
            m = Merger(shard, self)
            self.mergers.append(m)
            w = Worker(m, self, self.wake_events[shard.no])
            self.workers.append(w)
            w.start()

    def worker_pid(self, shard_no: int) -> int:
        return os.getpid()

    def flush(self) -> None:
        """Have every merge loop merge all buffers to segments; wait for it.

        Raises DiskError if a shard's merges fail with a disk error meanwhile
        (nothing is lost: the writes stay in the buffers and the WAL, and the
        loop keeps retrying in the background)."""
        events = [w.request_flush() for w in self.workers]
        for ev in events:
            while not ev.wait(0.1):
                self.check()
        self.check()
        for w, ev in zip(self.workers, events):
            if ev.error is not None:
                flush_failed(w.merger.no, ev.error)

    def _close(self) -> None:
        """Stop the merge loops, write the rings out, merge every buffer into
        segments, write the manifest, delete the WAL, remove all shared memory
        (even if the merge fails), release LOCK."""
        disk_error = None
        try:
            for w in self.workers:
                w.stop()
            self.workers = []
            # WAL first: what the ring holds reaches the file before merging, so a
            # failure below still leaves every acknowledged write in the log.
            for f in self.wal_writers:
                try:
                    f.stop()
                except DiskError as e:
                    disk_error = disk_error or e
            self.wal_writers = []
            if disk_error is not None:
                # The rings hold acknowledged records no file has: leave them in
                # /dev/shm for the next open to salvage (recovery.salvage).
                self.keep_rings()
            if self.error is None and disk_error is None:
                try:
                    for m in self.mergers:
                        m.flush_all()
                    self.write_manifest()
                    catalog.delete_wal(self.path)
                except OSError as e:
                    if retry.transient(e) is None:
                        raise
                    # The WAL is whole on disk (the WAL writers stopped cleanly) and
                    # nothing it holds is deleted before a manifest covers it.
                    traceback.clear_frames(e.__traceback__)   # views of the arena
                    disk_error = DiskError(
                        f"close() could not merge the buffers into segments: {e}; nothing "
                        f"is lost: the WAL holds every write and the next open replays it")
                    disk_error.__cause__ = e
        finally:
            self.mergers = []
            self.teardown()
        self.check()
        if disk_error is not None:
            raise disk_error

    def stop_threads(self, attempt: Attempts) -> None:
        for w in self.workers:
            attempt(w.stop)
        self.workers = []
        for f in self.wal_writers:
            f.stopping.set()
            f.kick.set()
            if f.is_alive():
                f.join()
            if f.fd >= 0:
                attempt(os.close, f.fd)
        self.wal_writers = []
