"""What a process that does not run a shard's background work (a client, the
router) does through the process that does (the shard's worker process)."""

from __future__ import annotations

import os
import time

from fusedb.core import retry
from fusedb.errors import ClosedError, FuseDBError
from fusedb.runtime.state import flush_failed
from fusedb.shm.meta import M_STATE, STATE_OPEN, W_FLUSH_DONE, W_FLUSH_REQ
from fusedb.wal.ring import Ring
from fusedb.wal.writer import RemoteWalWriter


def remote_wal_writer(rt, no: int, ring: Ring) -> RemoteWalWriter:
    """Shard ``no``'s WAL writer as seen from a process that does not run it
    (``rt``: its Runtime, whose kick events are open): kicks the one in the
    shard's worker process."""
    return RemoteWalWriter(ring, rt.kick_events[no], rt.meta.shard_stats(no), no,
                         rt.meta.shard_faults(no))


def flush_through_workers(rt) -> None:
    """flush() of a multiprocess database, from any process (client or router):
    post a request in each shard's worker slot, wake the worker, wait until
    each one has served it.

    Raises DiskError if a worker's merges fail with a disk error meanwhile
    (nothing is lost: the writes stay in the buffers and the WAL, and the worker
    keeps retrying in the background), ClosedError if the database closes,
    FuseDBError if a worker does not finish within ``close_timeout`` seconds."""
    meta = rt.meta
    wanted = []
    for shard in rt.shards:
        slots, faults = meta.worker_slots(shard.no), meta.shard_faults(shard.no)
        failures = faults[retry.F_FAILURES[retry.WORKER]]
        with shard.lock:     # requests from several processes must not collide
            req = slots[W_FLUSH_REQ] + 1
            slots[W_FLUSH_REQ] = req
        wanted.append((req, failures))
        rt.wake(shard.no)
    deadline = time.monotonic() + rt.opts.close_timeout
    for shard, (req, failures) in zip(rt.shards, wanted):
        slots, faults = meta.worker_slots(shard.no), meta.shard_faults(shard.no)
        while slots[W_FLUSH_DONE] < req:
            if rt.meta.hdr[M_STATE] != STATE_OPEN:
                raise ClosedError("the database closed during flush()")
            if faults[retry.F_FAILURES[retry.WORKER]] != failures:
                packed = faults[retry.F_CURRENT[retry.WORKER]]
                if packed:
                    no = packed >> 8
                    flush_failed(shard.no, OSError(no, os.strerror(no)),
                                 retry.describe(packed))
                failures = faults[retry.F_FAILURES[retry.WORKER]]
            if time.monotonic() > deadline:
                raise FuseDBError(f"the worker of shard {shard.no} did not flush within "
                                  f"close_timeout={rt.opts.close_timeout}s")
            rt.check_router()
            time.sleep(0.002)
