"""Attaching to a running multiprocess database (a client, or a shard's worker
process): map its shared memory, open its locks and wake-ups."""

from __future__ import annotations

import posix_ipc

from fusedb.core.layout import M_READY
from fusedb.errors import NotRunningError
from fusedb.options import Options
from fusedb.runtime.segcache import SegmentCache
from fusedb.runtime.sync import make_proc_sync
from fusedb.shm import region
from fusedb.shm.arena import Arena
from fusedb.shm.locks import alive
from fusedb.shm.meta import M_MODE, M_ROUTER_PID, M_STATE, MODE_MULTIPROCESS, STATE_OPEN, Meta
from fusedb.wal.ring import Ring


def attach(rt, stuck=None, repairer: int = -1) -> tuple[list[Arena], list[Ring]]:
    """Map the meta block (``rt.meta``), read the options (``rt.opts``), map
    every shard's arena and ring (returned; also in ``rt.regions``), open the
    locks and wake-ups (fusedb.runtime.sync; ``stuck``, ``repairer``: the worker
    process's) and make the segment cache. Called by the attaching role's
    constructor on the attaching thread.

    Raises NotRunningError if no database is open at ``rt.path``, if its open
    is still in progress, if it runs embedded (``transient`` False: only that
    does not change by waiting), or if it is closing or its router is gone;
    also if its shared memory goes away while being mapped (a close racing).
    Workers (``repairer`` >= 0) attach before the router's open is done."""
    nm = region.name
    try:
        rt.meta = meta = Meta(nm(rt.tag, "meta"))
    except posix_ipc.PermissionsError:
        raise NotRunningError(f"no permission to attach to the database at {rt.path}: its "
                              f"shared memory belongs to another user (run as the user that "
                              f"opened it or runs its daemon)", transient=False) from None
    except posix_ipc.ExistentialError:
        raise NotRunningError(f"no database is open at {rt.path}: start one with "
                              f"fusedb serve, fusedb.connect(path, start=True) or "
                              f"fusedb.open(path, shards=N)") from None
    except (RuntimeError, ValueError):
        # Created but not yet initialised (an open in progress), or of another version.
        raise NotRunningError(f"the database at {rt.path} is being opened, or is open by "
                              f"another version of FuseDB") from None
    hdr = meta.hdr
    if repairer < 0 and not hdr[M_READY]:
        raise NotRunningError(f"the database at {rt.path} is still being opened")
    if hdr[M_MODE] != MODE_MULTIPROCESS:
        raise NotRunningError(f"the database at {rt.path} is open in embedded mode; "
                              f"only a multiprocess database (fusedb serve, or "
                              f"open(..., shards=N)) accepts other processes",
                              transient=False)
    if hdr[M_STATE] != STATE_OPEN or not alive(hdr[M_ROUTER_PID]):
        raise NotRunningError(f"the database at {rt.path} is closing or its router "
                              f"process (pid {hdr[M_ROUTER_PID]}) is gone")
    rt.opts = Options.from_json(meta.get_options())
    arenas, rings = [], []
    try:
        for i in range(meta.shards):
            arenas.append(Arena(nm(rt.tag, f"arena{i}")))
            rt.regions.append(arenas[-1])
            rings.append(Ring(nm(rt.tag, f"wal{i}")))
            rt.regions.append(rings[-1])
        make_proc_sync(rt, create=False, stuck=stuck, repairer=repairer)
    except posix_ipc.ExistentialError:
        raise NotRunningError(f"the database at {rt.path} closed while this process "
                              f"attached") from None
    except posix_ipc.PermissionsError:
        raise NotRunningError(f"no permission to attach to the database at {rt.path}: its "
                              f"shared memory belongs to another user", transient=False) \
            from None
    rt.segments = SegmentCache(rt.path, meta, rt.meta_lock, rt.segcache)
    return arenas, rings
