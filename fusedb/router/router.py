"""The router role: the process that opened a multiprocess database."""

from __future__ import annotations

import os
import subprocess

from fusedb.core import retry
from fusedb.errors import DiskError, FuseDBError
from fusedb.options import Options
from fusedb.router.spawn import WorkerProcesses
from fusedb.runtime import bootstrap, catalog
from fusedb.runtime.remote import flush_through_workers, remote_wal_writer
from fusedb.runtime.segcache import SegmentCache
from fusedb.runtime.state import Attempts, Runtime
from fusedb.runtime.sync import make_proc_sync
from fusedb.shard.shard import Shard
from fusedb.shm.meta import M_MODE, M_ROUTER_PID, MODE_MULTIPROCESS, W_PID
from fusedb.wal.writer import WalWriter


class RouterStore(Runtime):
    """A multiprocess database's owner, opened by ``fusedb.open(path, shards=N)``
    on the calling thread: takes LOCK, recovers, creates the shared memory and
    the named semaphores, writes the manifest (attached processes read shard
    membership from it when they repair), starts one worker process per shard
    and supervises them (fusedb.router.spawn). Point operations of this process
    run directly on the shared memory like a client's. Any thread may call
    :meth:`flush`; :meth:`close` runs on one thread, after every other call of
    this process returned."""

    def __init__(self, path: str, opts: Options):
        super().__init__(path, opts)
        self.lockfile = bootstrap.lock_directory(self.path, opts)
        self.workers = WorkerProcesses(self, self.lockfile.fd)
        bootstrap.open_owned(self, self._open)

    def _open(self) -> None:
        opts = self.opts
        rec, arenas, rings = bootstrap.recover_and_map(self)
        meta = self.meta
        meta.hdr[M_MODE] = MODE_MULTIPROCESS
        meta.hdr[M_ROUTER_PID] = os.getpid()
        meta.set_options(opts.to_json())
        bootstrap.load_leaves(meta, rec, rings, opts.shards)
        make_proc_sync(self, create=True)     # SharedMemoryError if /dev/shm is full
        self.segments = SegmentCache(self.path, meta, self.meta_lock, self.segcache)
        for i in range(opts.shards):
            self.shards.append(Shard(self, i, self.shard_locks[i], arenas[i], rings[i],
                                     remote_wal_writer(self, i, rings[i])))
        # Attached processes read shard membership from the manifest when they
        # repair a shard, so it must match this run's assignment from the start.
        self.write_manifest()
        self.workers.start()

    def worker_pid(self, shard_no: int) -> int:
        return self.meta.worker_slots(shard_no)[W_PID]

    def flush(self) -> None:
        flush_through_workers(self)

    def _close(self) -> None:
        """Close a multiprocess database: refuse new operations everywhere, let each
        worker merge its shard and exit, then write the manifest and clean up. A
        worker that fails to exit is killed; its ring is written out to the WAL
        here and the WAL kept for the next open to replay."""
        meta = self.meta
        clean = False
        disk = False
        try:
            self.workers.stop_supervising()
            with self.meta_lock:
                meta.close_routing()
            for shard in self.shards:
                # Wait out any writer inside its critical section; later ones see
                # the closed state under the lock and raise ClosedError.
                try:
                    with shard.lock:
                        pass
                except FuseDBError:
                    pass     # a dead holder: the worker's exit path does not need it
            procs = self.workers.procs
            for no in range(len(procs)):
                self.wake(no)
            clean = True
            for no, p in enumerate(procs):
                try:
                    code = p.wait(self.opts.close_timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    code = p.wait()
                if code != 0:
                    clean = False
                    disk = disk or code == retry.EXIT_DISK_ERROR
                    self._salvage_ring(self.shards[no])
            if clean:
                try:
                    self.write_manifest()
                    catalog.delete_wal(self.path)
                except OSError as e:
                    if retry.transient(e) is None:
                        raise
                    raise DiskError(f"close() could not write the manifest: {e}; nothing is "
                                    f"lost: the WAL is kept and the next open replays it") \
                        from e
        finally:
            self.teardown()
        if not clean:
            if disk:
                raise DiskError("a worker process met a disk error while closing (its log "
                                "line says which); its WAL was kept and the next open "
                                "replays it (nothing acknowledged is lost)")
            raise FuseDBError("a worker process failed while closing; its WAL was kept and "
                              "the next open replays it (nothing acknowledged is lost)")

    def stop_threads(self, attempt: Attempts) -> None:
        """Stop supervising; kill any worker process still running."""
        attempt(self.workers.kill_all)

    def _salvage_ring(self, shard: Shard) -> None:
        """Write what a dead worker's ring holds to its WAL file (fsynced)."""
        f = WalWriter(self.path, shard.no, shard.ring, "sync", 0.0, self.opts.wal_file_bytes)
        f.write_out(fsync=True)
        os.close(f.fd)
        if f.error is not None:
            self.keep_rings()
