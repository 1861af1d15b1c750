"""Attaching to a running multiprocess database (a client, or a shard's worker
process): map its shared memory, open its locks and wake-ups.

Attaching races the owner's open and close: an object may be missing, not yet
made or filled in (an open in progress), or unlinked meanwhile (a close,
perhaps followed by the next open). Every such state maps to NotRunningError,
``opening`` when the directory's LOCK is held (an open in progress, or the last
instants of a close: waiting settles it; :func:`fusedb.runtime.client.connect`
waits), and a shared memory object this user may not open to
PermissionDeniedError naming its owner."""

from __future__ import annotations

import os

import posix_ipc

from fusedb.core.fileio import shared_group
from fusedb.core.layout import M_READY
from fusedb.errors import FuseDBError, NotRunningError, PermissionDeniedError
from fusedb.options import Options
from fusedb.runtime.dirlock import group_name, lock_holders, user_name
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
    constructor on the attaching thread; what it mapped is released by the
    role's teardown.

    Raises NotRunningError if no database is open at ``rt.path``, if its open
    is still in progress (``opening``), if it runs embedded (``transient``
    False: only that does not change by waiting), or if it is closing or its
    router is gone; also if its shared memory goes away (or is made again)
    while being mapped (a close racing: ``opening`` while LOCK is held).
    PermissionDeniedError if its shared memory is another user's, not shared
    with a group of this process. Workers (``repairer`` >= 0) attach before the
    router's open is done."""
    try:
        arenas, rings = _map(rt, stuck, repairer)
    except FuseDBError:
        raise
    except posix_ipc.PermissionsError:
        raise _no_permission(rt) from None
    except (posix_ipc.ExistentialError, RuntimeError, ValueError):
        # Missing, not yet made (a size-0 object: ValueError), not yet filled in
        # (a bad magic: RuntimeError, ValueError) or unlinked meanwhile.
        raise _not_open(rt) from None
    _check_open(rt)       # still the database that was open when the mapping began
    rt.segments = SegmentCache(rt.path, rt.meta, rt.meta_lock, rt.segcache)
    return arenas, rings


def _map(rt, stuck, repairer: int) -> tuple[list[Arena], list[Ring]]:
    nm = region.name
    rt.meta = meta = Meta(nm(rt.tag, "meta"))
    hdr = meta.hdr
    if repairer < 0 and not hdr[M_READY]:
        raise _not_open(rt)
    if hdr[M_MODE] != MODE_MULTIPROCESS:
        raise NotRunningError(f"the database at {rt.path} is open in embedded mode; "
                              f"only a multiprocess database (fusedb serve, or "
                              f"open(..., shards=N)) accepts other processes",
                              transient=False)
    _check_open(rt)
    rt.opts = Options.from_json(meta.get_options())
    arenas, rings = [], []
    for i in range(meta.shards):
        arenas.append(Arena(nm(rt.tag, f"arena{i}")))
        rt.regions.append(arenas[-1])
        rings.append(Ring(nm(rt.tag, f"wal{i}")))
        rt.regions.append(rings[-1])
    make_proc_sync(rt, create=False, stuck=stuck, repairer=repairer)
    return arenas, rings


def _check_open(rt) -> None:
    hdr = rt.meta.hdr
    if hdr[M_STATE] != STATE_OPEN or not alive(hdr[M_ROUTER_PID]):
        raise NotRunningError(f"the database at {rt.path} is closing or its router "
                              f"process (pid {hdr[M_ROUTER_PID]}) is gone: attach again "
                              f"once it runs (fusedb serve, or open(path, shards=N))")


def _not_open(rt) -> NotRunningError:
    """The NotRunningError of a database whose meta block is missing or not
    ready: an open (or the end of a close) in progress if a process holds its
    LOCK, else nothing open (or a leftover of a run that crashed)."""
    holders = lock_holders(rt.path)
    if holders:
        return NotRunningError(f"the database at {rt.path} is being opened (or closed) by "
                               f"process {', '.join(map(str, holders))}", opening=True)
    return NotRunningError(f"no database is open at {rt.path}: start one with fusedb serve, "
                           f"fusedb.connect(path, start=True) or fusedb.open(path, shards=N)")


def _no_permission(rt) -> FuseDBError:
    """The error of a meta block (or another object) this process may not open:
    PermissionDeniedError naming its owner, or NotRunningError ``opening`` while
    the owner still gives the objects of a database shared with a group of
    ours their group (fusedb.runtime.bootstrap.open_owned)."""
    try:
        st = os.stat(region.path_of("shm", region.name(rt.tag, "meta")))
    except FileNotFoundError:
        return _not_open(rt)
    except OSError:
        st = None
    mine = set(os.getgroups()) | {os.getegid()}
    try:
        sharing = shared_group(rt.path) in mine
    except OSError:
        sharing = False
    if sharing and lock_holders(rt.path):
        return NotRunningError(f"the database at {rt.path} is being opened and shared with "
                               f"a group of this process", opening=True)
    who = (f"belongs to {user_name(st.st_uid)}, group {group_name(st.st_gid)}, mode "
           f"{st.st_mode & 0o777:04o}" if st else "belongs to another user")
    return PermissionDeniedError(
        f"no permission to attach to the database at {rt.path}: its shared memory {who}, "
        f"and this process runs as {user_name(os.geteuid())} in groups "
        f"{', '.join(group_name(g) for g in sorted(mine))}: run as its owner, or have it "
        f"opened shared with a group of this process (fusedb.open(path, group=...), "
        f"fusedb serve --group, fusedb.connect(path, start=True, group=...)) and add this "
        f"user to that group")
