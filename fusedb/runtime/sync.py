"""The cross-process locks and wake-ups of a multiprocess database."""

from __future__ import annotations

from collections.abc import Callable

import posix_ipc

from fusedb.shm import region
from fusedb.shm.locks import ProcLock, SemEvent, init_mutex, mutex_size


def make_proc_sync(rt, create: bool, stuck: Callable[[], None] | None = None,
                   repairer: int = -1) -> None:
    """Set ``rt``'s locks and wake-ups (a fusedb.runtime.state.Runtime whose
    ``meta`` is mapped): the robust mutexes in the meta block's lock slots
    (initialised here by the router, ``create``: fusedb.shm.locks) and the named
    semaphores, per shard a wake-up for its merge loop and one for its WAL
    writer. The router creates them (their names go to ``rt.shm_names``), the
    other processes open them. A worker process passes ``stuck`` (its repair
    check, run between two slices of every lock wait) and ``repairer`` (its
    shard number: that lock's repairer). Raises SharedMemoryError if /dev/shm is
    full, posix_ipc.ExistentialError if a semaphore is gone."""
    meta = rt.meta
    n = meta.shards
    timeout = rt.opts.lock_timeout

    def sem(what: str, value: int) -> posix_ipc.Semaphore:
        name = region.name(rt.tag, what)
        if create:
            s = region.create_semaphore(name, value)
            rt.shm_names.append(("sem", name))
        else:
            s = posix_ipc.Semaphore(name)
        rt.sems.append(s)
        return s

    rt.wake_events = [SemEvent(sem(f"wake{i}", 0)) for i in range(n)]
    rt.kick_events = [SemEvent(sem(f"kick{i}", 0)) for i in range(n)]
    if create:
        for j in range(n + 2):
            init_mutex(meta.lock_slot(j))
    else:
        mutex_size()      # this process's C library must agree with the slot size
    words = meta.locks
    rt.shard_locks = [ProcLock(meta.lock_slot(i), words, i, timeout, f"shard {i} lock",
                               wake=rt.wake_events[i].set, stuck=stuck,
                               repairer=i == repairer) for i in range(n)]
    rt.meta_lock = ProcLock(meta.lock_slot(n), words, n, timeout, "meta lock",
                            recover=meta.end_interrupted_change, stuck=stuck)
    # A manifest is published by rename: a dead holder leaves at most a temp file.
    rt.manifest_lock = ProcLock(meta.lock_slot(n + 1), words, n + 1, timeout,
                                "manifest lock", recover=lambda: None, stuck=stuck)
    rt.proc_locks = rt.shard_locks + [rt.meta_lock, rt.manifest_lock]
