"""The worker role: a shard's worker process as attached to the database."""

from __future__ import annotations

import logging

from fusedb.errors import LockTimeoutError
from fusedb.runtime.attach import attach
from fusedb.runtime.remote import remote_wal_writer
from fusedb.runtime.state import Runtime
from fusedb.shard.merging import Merger
from fusedb.shard.shard import Shard
from fusedb.shm.locks import RepairNeeded
from fusedb.core.layout import W_PID
from fusedb.wal.writer import WalWriter

log = logging.getLogger("fusedb")


class PatientLock:
    """The worker process's meta lock: the ProcLock ``lock`` (also
    :attr:`inner`), except that a wait never raises LockTimeoutError: it lasts
    as long as the holder lives, with one log line each time it passes
    ``lock_timeout`` (a holder that dies is recovered by the lock itself:
    EOWNERDEAD). RepairNeeded and the lock's other errors propagate.

    Why wait rather than drop the round: the meta lock's critical sections are
    O(1) and never wait for another lock, so a live process holding it past
    ``lock_timeout`` is stopped or stalled (SIGSTOP, a debugger), and only
    waiting lets this worker go on. Some of its meta-lock sections can be given
    up (a scheduling snapshot, a merge's snapshot, a new leaf id: nothing is
    half done there), but a split takes the meta lock under the shard lock
    *after* changing the leaf table (fusedb.shard.merging, ``_split_locked``)
    and a repair publishes under it too: giving up there would release the
    shard lock over a half-published split, whose right half's keys no route
    reaches any more (an earlier fix that dropped the round lost keys so).
    Shard and manifest lock timeouts in a round are dropped and retried
    (fusedb.shard.worker.Worker.run): nothing is half published at those."""

    def __init__(self, lock, shard_no: int):
        self.inner = lock
        self.shard_no = shard_no

    def acquire(self) -> None:
        while True:
            try:
                self.inner.acquire()
                return
            except LockTimeoutError:
                log.warning("shard %d: the meta lock is held past lock_timeout=%ss by pid "
                            "%s, a live process; still waiting for it", self.shard_no,
                            self.inner.timeout, self.inner.holder())

    def release(self) -> None:
        self.inner.release()

    def __enter__(self) -> PatientLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.inner.release()


class WorkerStore(Runtime):
    """Shard ``shard_no``'s worker process's view of the database, built on its
    main thread by fusedb.worker.process: attached like a client, plus this
    shard's WAL writer (:attr:`wal_writer`, a thread started by the process) and
    its :attr:`merger` (used on the main thread only). Every lock of this
    process runs :meth:`stuck` between two slices of a wait, and its own shard
    lock is marked as this process's to repair (fusedb.shm.locks)."""

    def __init__(self, path: str, shard_no: int):
        super().__init__(path, None)
        self.shard_no = shard_no
        try:
            arenas, rings = attach(self, stuck=self.stuck, repairer=shard_no)
            opts, meta = self.opts, self.meta
            for i, (arena, ring) in enumerate(zip(arenas, rings)):
                if i == shard_no:
                    f = WalWriter(self.path, i, ring, opts.durability, opts.sync_interval,
                                opts.wal_file_bytes, kick=self.kick_events[i],
                                stats=meta.shard_stats(i), faults=meta.shard_faults(i),
                                limit=opts.wal_limit_bytes,
                                wake=self.wake_events[i])
                    self.wal_writers.append(f)
                else:
                    f = remote_wal_writer(self, i, ring)
                self.shards.append(Shard(self, i, self.shard_locks[i], arena, ring, f))
        except BaseException:
            self.teardown()
            raise
        self.meta_lock = PatientLock(self.meta_lock, shard_no)
        self.shard = self.shards[shard_no]
        self.wal_writer = self.wal_writers[0]
        self.merger = Merger(self.shard, self)

    def stuck(self) -> None:
        """Raise RepairNeeded if this process's shard needs repair (its lock's
        holder died), unless this thread holds that lock: that is the repair."""
        lock = self.shard_locks[self.shard_no]
        if lock.needs_repair() and not lock.held_here():
            raise RepairNeeded(f"shard {self.shard_no} needs repair")

    def worker_pid(self, shard_no: int) -> int:
        return self.meta.worker_slots(shard_no)[W_PID]

    def flush(self) -> None:
        """Merge every buffer of this process's shard (its close; main thread)."""
        self.merger.flush_all()
