"""The worker role: a shard's worker process as attached to the database."""

from __future__ import annotations

from fusedb.runtime.attach import attach
from fusedb.runtime.remote import remote_wal_writer
from fusedb.runtime.state import Runtime
from fusedb.shard.merging import Merger
from fusedb.shard.shard import Shard
from fusedb.shm.locks import RepairNeeded
from fusedb.core.layout import W_PID
from fusedb.wal.writer import WalWriter


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
