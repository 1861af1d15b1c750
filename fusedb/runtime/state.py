"""The state every role of an open database shares in one process, and the
interface every role implements.

A process reaches an open database through exactly one *role* object
(docs/design.md, "Processes"):

=====================================  ==========================================
fusedb.runtime.embedded.EmbeddedStore  the only process; threads do the background
fusedb.router.router.RouterStore       the process that opened it multiprocess
fusedb.worker.role.WorkerStore         a shard's worker process
fusedb.runtime.client.ClientStore      any other process (``fusedb.connect``)
=====================================  ==========================================

Each is a :class:`Runtime` (the shared per-process state and the services the
shards use, :class:`fusedb.shard.context.ShardContext`) and implements
:class:`Role`. Nothing branches on which role it is.
"""

from __future__ import annotations

import os
from typing import Protocol

import posix_ipc

from fusedb.core import retry
from fusedb.errors import DiskError, FuseDBError
from fusedb.options import Options
from fusedb.runtime import catalog, hooks
from fusedb.runtime.dirlock import DirLock
from fusedb.runtime.segcache import SegmentCache
from fusedb.shm import region


class Role(Protocol):
    """What the API (fusedb.api.db.FuseDB) calls on the role it holds.

    ``check()``: raise FuseDBError if the background work failed (cheap: every
    operation). ``check_router()``: raise ClosedError if the database's router is
    gone (an attached client only; slow paths). ``flush()``: have every shard's
    merge loop merge all buffers into segments and wait. ``close()``: embedded
    and router close the database, a client detaches; idempotent. ``wake(no)``:
    wake shard ``no``'s merge loop. ``worker_pid(no)``: the pid doing shard
    ``no``'s background work. ``multiprocess``: whether other processes can
    attach (a handle pickles and survives fork())."""

    multiprocess: bool

    def check(self) -> None: ...

    def check_router(self) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def wake(self, shard_no: int) -> None: ...

    def worker_pid(self, shard_no: int) -> int: ...


class Attempts:
    """Runs the steps of a teardown so that each runs even if an earlier one
    failed (a view still held by a live scan iterator makes an unmap fail);
    :meth:`raise_first` raises the first failure at the end. Made by
    :meth:`Runtime.teardown` and :meth:`Runtime.release_shm`, one per call, on
    the thread closing the database (or whose open failed), and passed to the
    roles' steps (``stop_threads``, ``DirLock.release``); no lock: local to
    that call."""

    def __init__(self):
        self.errors: list[BaseException] = []

    def __call__(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - collected, the first one re-raised
            self.errors.append(e)

    def raise_first(self) -> None:
        if self.errors:
            raise self.errors[0]


class Runtime:
    """The per-process state of one open database, shared by all threads of the
    process, the base of every role. Built by the role's constructor on the
    thread that opens or attaches; after that only :attr:`error` changes (set
    by a merge loop, :meth:`fail`) until close.

    ``path`` (real path), ``tag`` (shared-memory name prefix), ``opts``,
    ``meta`` (the meta block), ``meta_lock``, ``manifest_lock``, ``shards``,
    ``wake_events``/``kick_events`` (per shard: its merge loop's and its WAL
    writer's wake-ups), ``segments`` (the SegmentCache; ``segcache`` is its
    dict), ``wal_writers`` (the WAL writers this process runs), ``lockfile`` (the
    DirLock, owners only), ``shm_names`` (what this process created and
    unlinks at close: ("shm"|"sem", name))."""

    multiprocess = True

    def __init__(self, path: str, opts: Options | None):
        self.path = os.path.realpath(path)
        self.tag = region.tag_for(self.path)
        self.opts = opts
        self.error: BaseException | None = None
        self.inherited = False
        self.meta = None
        self.meta_lock = None
        self.manifest_lock = None
        self.shards: list = []
        self.wake_events: list = []
        self.kick_events: list = []
        self.segments: SegmentCache | None = None
        self.segcache: dict = {}
        self.wal_writers: list = []
        self.lockfile: DirLock | None = None
        self.shm_names: list[tuple[str, str]] = []
        self.regions: list = []      # arenas and rings mapped here
        self.sems: list[posix_ipc.Semaphore] = []
        self.shard_locks: list = []
        self.proc_locks: list = []
        self.replayed = 0
        self.repairs = 0
        #: Compiled kernels (fusedb.core._kernel.Kernel) holding buffers of this
        #: database's shared memory: released before it is unmapped.
        self.kernels: list = []

    # -- ShardContext ------------------------------------------------------------------

    def wake(self, shard_no: int) -> None:
        self.wake_events[shard_no].set()

    def kick_wal_writer(self, shard_no: int) -> None:
        self.kick_events[shard_no].set()

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error

    def after_publish(self, replaced: list[int]) -> None:
        catalog.after_publish(self, replaced)

    def stage_move(self, leaf: int, dst: int) -> None:
        catalog.stage_move(self, leaf, dst)

    # -- Role (the common part) ---------------------------------------------------------

    def check(self) -> None:
        if self.error is not None:
            raise FuseDBError(f"the background merge worker failed: {self.error!r}") \
                from self.error

    def check_router(self) -> None:
        """Nothing to check here (see ClientStore)."""

    def open_for_retry(self, segids: list[int], attempt: int) -> None:
        self.segments.open_for_retry(segids, attempt)

    def write_manifest(self) -> tuple[set[int], list[int]]:
        return catalog.write_manifest(self)

    def close(self) -> None:
        """Close (owners) or detach (clients); idempotent. A role inherited
        through fork() is left alone."""
        if self.meta is None:
            return
        hooks.closed(self)
        if self.inherited:
            self.meta = None
            return
        self._close()

    def _close(self) -> None:
        self.release_shm()

    def after_fork(self) -> None:
        """In a fork()ed child (fusedb.runtime.hooks): the database is the
        parent's; drop this process's copy of LOCK, never close anything."""
        self.inherited = True
        if self.lockfile is not None:
            self.lockfile.drop_inherited()

    # -- teardown ---------------------------------------------------------------------

    def stop_threads(self, attempt: Attempts) -> None:
        """Stop the threads this role runs (none here)."""

    def teardown(self) -> None:
        """Unlink what this process created, stop its threads, unmap, release
        LOCK: every step runs even if an earlier one fails; the first failure is
        raised at the end. Names first: unlinking needs nothing else to succeed,
        and it is what keeps /dev/shm clean whatever happens below."""
        attempt = Attempts()
        self.unlink_names(attempt)
        self.stop_threads(attempt)
        self.unmap(attempt)
        if self.lockfile is not None:
            self.lockfile.release(attempt)
        attempt.raise_first()

    def release_shm(self, unlink: bool = True) -> None:
        """Release the shared memory only: unlink the names this process created
        (unless ``unlink`` is False: a simulated crash leaves them), unmap, close
        the semaphores. Threads and LOCK are the caller's (stop them first)."""
        attempt = Attempts()
        if unlink:
            self.unlink_names(attempt)
        self.unmap(attempt)
        attempt.raise_first()

    def unlink_names(self, attempt: Attempts) -> None:
        for kind, nm in self.shm_names:
            if kind == "shm":
                attempt(posix_ipc.unlink_shared_memory, nm)
            else:
                attempt(posix_ipc.unlink_semaphore, nm)
        self.shm_names = []

    def keep_rings(self) -> None:
        """Leave the WAL rings in /dev/shm at close (they hold acknowledged
        records no file has): the next open salvages them."""
        self.shm_names = [(k, nm) for k, nm in self.shm_names
                          if not nm.rsplit("-", 1)[-1].startswith("wal")]

    def unmap(self, attempt: Attempts) -> None:
        for k in self.kernels:
            k.release()
        self.kernels = []
        for seg in self.segcache.values():
            attempt(seg.close)
        self.segcache.clear()
        for r in self.regions:
            attempt(r.close)
        self.regions = []
        self.shards = []
        for s in self.sems:
            attempt(s.close)
        self.sems = []
        for lock in self.proc_locks:
            lock.close()       # drops its view of the meta block before the unmap
        self.proc_locks = []
        if self.meta is not None:
            attempt(self.meta.close)
            self.meta = None


def flush_failed(shard_no: int, error: BaseException, what: str | None = None):
    """Raise the DiskError of a flush() that a shard's merges could not do."""
    err = retry.transient(error) or error
    raise DiskError(f"flush() could not merge shard {shard_no}: {what or err}; nothing "
                    f"is lost (the writes are in the buffers and the WAL) and the "
                    f"merge is retried in the background") from err
