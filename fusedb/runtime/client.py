"""The client role: a process attached to a multiprocess database
(``fusedb.connect``, or a handle re-attaching after fork() or unpickling)."""

from __future__ import annotations

import os
import time

from fusedb.errors import ClosedError, NotRunningError
from fusedb.runtime.attach import attach
from fusedb.runtime.remote import flush_through_workers, remote_wal_writer
from fusedb.runtime.state import Attempts, Runtime
from fusedb.shard.shard import Shard
from fusedb.shm.locks import alive
from fusedb.shm.meta import M_ROUTER_PID, W_PID


class ClientStore(Runtime):
    """An attached process: point operations run directly on the shared memory;
    the background work is the worker processes'. Built on the thread that
    attaches; used by any thread; :meth:`close` detaches (unmaps; unlinks
    nothing). Raises NotRunningError (fusedb.runtime.attach) if nothing runs
    at ``path``, and LockTimeoutError if the meta lock stays held.

    Once attached, the handle lists itself in the meta block's client registry
    (``stats()["clients"]``: this pid and the attach time; :attr:`client_slot`,
    -1 when the registry was full) and unlists itself when it unmaps: at
    close, at exit, or when an attach fails after registering. A fork()ed
    child's inherited copy never unmaps (Runtime.after_fork), so it leaves the
    parent's slot alone; the child's handle re-attaches as a new ClientStore
    and lists the child's own pid."""

    def __init__(self, path: str):
        super().__init__(path, None)
        self.client_slot = -1
        self._pid = os.getpid()
        try:
            arenas, rings = attach(self)
            for i, (arena, ring) in enumerate(zip(arenas, rings)):
                self.shards.append(Shard(self, i, self.shard_locks[i], arena, ring,
                                         remote_wal_writer(self, i, ring)))
            with self.meta_lock:
                self.client_slot = self.meta.register_client(self._pid, time.time_ns() // 1000)
        except BaseException:
            self.teardown()
            raise

    def unmap(self, attempt: Attempts) -> None:
        """Unlist this handle (every close path unmaps), then unmap."""
        if self.meta is not None:
            attempt(self.meta.unregister_client, self.client_slot, self._pid)
        self.client_slot = -1
        super().unmap(attempt)

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


def connect(path: str, timeout: float) -> ClientStore:
    """A ClientStore attached to the database at ``path``, waiting while an open
    of it (or the end of a close) is in progress: up to ``timeout`` seconds.
    Raises the NotRunningError of fusedb.runtime.attach at once when waiting
    cannot help (nothing open, embedded, closing), or when ``timeout`` passed
    (saying so); PermissionDeniedError; LockTimeoutError."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            return ClientStore(path)
        except NotRunningError as e:
            if not e.opening:
                raise
            if time.monotonic() + pause > deadline:
                raise NotRunningError(f"{e}, and it did not finish within {timeout:.1f} s "
                                      f"(connect's timeout)", opening=True) from None
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
