"""The client role: a process attached to a multiprocess database
(``fusedb.connect``, or a handle re-attaching after fork() or unpickling)."""

from __future__ import annotations

from fusedb.errors import ClosedError
from fusedb.runtime.attach import attach
from fusedb.runtime.remote import flush_through_workers, remote_wal_writer
from fusedb.runtime.state import Runtime
from fusedb.shard.shard import Shard
from fusedb.shm.locks import alive
from fusedb.shm.meta import M_ROUTER_PID, W_PID


class ClientStore(Runtime):
    """An attached process: point operations run directly on the shared memory;
    the background work is the worker processes'. Built on the thread that
    attaches; used by any thread; :meth:`close` detaches (unmaps; unlinks
    nothing). Raises NotRunningError (fusedb.runtime.attach) if nothing runs
    at ``path``."""

    def __init__(self, path: str):
        super().__init__(path, None)
        try:
            arenas, rings = attach(self)
            for i, (arena, ring) in enumerate(zip(arenas, rings)):
                self.shards.append(Shard(self, i, self.shard_locks[i], arena, ring,
                                         remote_wal_writer(self, i, ring)))
        except BaseException:
            self.teardown()
            raise

    def check_router(self) -> None:
        """On a slow path: raise ClosedError if the router is gone (if its
        workers died too, nobody marked the database closed)."""
        if not alive(self.meta.hdr[M_ROUTER_PID]):
            raise ClosedError(f"the database's router process (pid "
                              f"{self.meta.hdr[M_ROUTER_PID]}) is gone")

    def worker_pid(self, shard_no: int) -> int:
        return self.meta.worker_slots(shard_no)[W_PID]

    def flush(self) -> None:
        flush_through_workers(self)
