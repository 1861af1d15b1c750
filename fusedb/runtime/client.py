"""The client role: a process attached to a multiprocess database
(``fusedb.connect``, or a handle re-attaching after fork() or unpickling)."""

from __future__ import annotations

import os
import time

from fusedb.core import retry
from fusedb.errors import ClosedError, FuseDBError
from fusedb.runtime.attach import attach, remote_flusher
from fusedb.runtime.state import Runtime, flush_failed
from fusedb.shard.shard import Shard
from fusedb.shm.locks import alive
from fusedb.shm.meta import M_ROUTER_PID, M_STATE, STATE_OPEN, W_FLUSH_DONE, W_FLUSH_REQ, W_PID


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
                                         remote_flusher(self, i, ring)))
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
        return self.meta.workers[shard_no * 4 + W_PID]

    def flush(self) -> None:
        flush_through_workers(self)


def flush_through_workers(rt) -> None:
    """flush() of a multiprocess database, from any process (client or router):
    post a request in each shard's worker slot, wake the worker, wait until
    each one has served it.

    Raises DiskError if a worker's merges fail with a disk error meanwhile
    (nothing is lost: the writes stay in the buffers and the WAL, and the worker
    keeps retrying in the background), ClosedError if the database closes,
    FuseDBError if a worker does not finish within ``close_timeout`` seconds."""
    slots = rt.meta.workers
    faults = rt.meta.faults
    wanted = []
    for shard in rt.shards:
        failures = faults[shard.no * retry.F_WORDS + retry.F_FAILURES[retry.WORKER]]
        with shard.lock:     # requests from several processes must not collide
            req = slots[shard.no * 4 + W_FLUSH_REQ] + 1
            slots[shard.no * 4 + W_FLUSH_REQ] = req
        wanted.append((req, failures))
        rt.wake(shard.no)
    deadline = time.monotonic() + rt.opts.close_timeout
    for shard, (req, failures) in zip(rt.shards, wanted):
        base = shard.no * retry.F_WORDS
        while slots[shard.no * 4 + W_FLUSH_DONE] < req:
            if rt.meta.hdr[M_STATE] != STATE_OPEN:
                raise ClosedError("the database closed during flush()")
            if faults[base + retry.F_FAILURES[retry.WORKER]] != failures:
                packed = faults[base + retry.F_CURRENT[retry.WORKER]]
                if packed:
                    no = packed >> 8
                    flush_failed(shard.no, OSError(no, os.strerror(no)),
                                 retry.describe(packed))
                failures = faults[base + retry.F_FAILURES[retry.WORKER]]
            if time.monotonic() > deadline:
                raise FuseDBError(f"the worker of shard {shard.no} did not flush within "
                                  f"close_timeout={rt.opts.close_timeout}s")
            rt.check_router()
            time.sleep(0.002)
