"""The open database's internals: directory, shared memory, shards, locks, workers,
segment cache and manifest. :class:`fusedb.api.db.FuseDB` is the API on top.

One class, four roles (docs/design.md, "Processes"):

``embedded``  the only process. Takes LOCK (flock), recovers, creates the shared
              memory, runs one merge worker thread and one WAL flusher thread per
              shard. Locks are thread locks.
``router``    the process that opened a multiprocess database. Takes LOCK,
              recovers, creates the shared memory and named semaphores, starts
              one worker process per shard and restarts any that dies.
``worker``    a shard's worker process (fusedb.worker.process): attaches, runs
              the shard's flusher thread and merge loop, repairs the shard if a
              process died holding its lock.
``client``    any other process (``fusedb.connect``): attaches, does point
              operations directly on shared memory.

Lifecycle: open = refuse a directory that is not FuseDB's (fusedb.runtime.identity), LOCK,
remove shared-memory objects a crashed run left (after salvaging their WAL
rings), read the MANIFEST, verify every segment it names, delete files of its
own it does not name, replay the WAL, record the layout options in FUSEDB, create
(and reserve) the shared memory. Close
= stop the workers, merge every buffer into segments, write the MANIFEST,
delete the WAL, unlink every shared-memory object, release LOCK.

Lock order, outermost first: manifest lock -> shard locks, in ascending shard
number -> meta lock. Writers take one shard lock; a batch takes the locks of all
the shards it touches, in ascending order; a split takes its shard's lock then
the meta lock; the manifest writer takes the manifest lock, then each shard lock
in turn (one at a time).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
import weakref

import posix_ipc
import psutil

from fusedb.core import failpoints, manifest, retry
from fusedb.runtime import identity, signals
from fusedb.errors import ClosedError, CorruptionError, DiskError, FuseDBError, LockedError, \
    NotRunningError, SharedMemoryError
from fusedb.core.manifest import LeafRecord, ManifestData
from fusedb.options import Options
from fusedb.core.segment import MAGIC as SEGMENT_MAGIC, Segment, file_name, write_segment
from fusedb.shard.shard import Shard
from fusedb.shard.worker import Worker
from fusedb.shm import region
from fusedb.shm.arena import A_FREE_TOP, Arena, region_bytes as arena_region_bytes
from fusedb.shm.locks import ProcLock, SemEvent, alive, init_mutex, mutex_size
from fusedb.shm.meta import M_MODE, M_NEXT_LEAF, M_NEXT_SEG, M_ROUTER_PID, M_STATE, \
    MODE_MULTIPROCESS, \
    S_DISK_ERROR, STATE_OPEN, W_FLUSH_DONE, W_FLUSH_REQ, W_PID, Meta, \
    region_bytes as meta_region_bytes
from fusedb.shm.slab import H_STATE, H_USED, STATE_FREE
from fusedb.wal import recovery
from fusedb.wal.reader import list_files as list_wal_files, read_file
from fusedb.wal.ring import DATA_OFF as RING_DATA_OFF, R_FILE_NO, R_HEAD, Ring
from fusedb.wal.writer import Flusher, RemoteFlusher

LOCK_FILE = identity.LOCK_FILE
log = logging.getLogger("fusedb")
ROLES = ("embedded", "router", "worker", "client")

# Databases still open at interpreter exit are closed (flushed, shared memory
# removed) so that a script that forgets close() leaves nothing in /dev/shm.
_open_stores: "weakref.WeakSet[Store]" = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    for store in list(_open_stores):
        store.close()


def _after_fork_in_child() -> None:
    # A forked child inherits its parent's stores: they are the parent's to close.
    # The child drops its copy of LOCK (flock is shared by inherited descriptors)
    # and never closes, flushes or unlinks anything of them.
    for store in list(_open_stores):
        store.inherited = True
        if store._lockfd >= 0:
            try:
                os.close(store._lockfd)
            except OSError:
                pass
            store._lockfd = -1
    _open_stores.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _starts_with(path: str, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:           # unreadable: not known to be ours
        return False


class Store:
    def __init__(self, path: str, opts: Options | None, role: str = "embedded",
                 shard_no: int = -1):
        assert role in ROLES
        self.role = role
        self.shard_no = shard_no
        self.opts = opts
        if role in ("embedded", "router"):
            os.makedirs(path, exist_ok=True)
        self.path = os.path.realpath(path)
        self.tag = region.tag_for(self.path)
        self.error: BaseException | None = None
        self.inherited = False
        self.segcache: dict[int, Segment] = {}
        self._segcache_lock = threading.Lock()
        self._opened = 0
        self.workers: list[Worker] = []
        self.flushers: list[Flusher] = []
        self.procs: list[subprocess.Popen | None] = []
        self.replayed = 0
        self.repairs = 0
        self.meta = None
        self.meta_lock = None
        self.manifest_lock = None
        self.shards: list[Shard] = []
        self.wake_events: list = []
        self.kick_events: list = []
        self._sems: list[posix_ipc.Semaphore] = []
        self._proc_locks: list[ProcLock] = []
        self._unlink: list[tuple[str, str]] = []
        self._lockfd = -1
        self._supervisor: threading.Thread | None = None
        self._closing = threading.Event()
        if role in ("embedded", "router"):
            identity.check_directory(self.path)     # before LOCK: a foreign one stays as it was
            self._take_lock_file()
        try:
            if role in ("embedded", "router"):
                self._open()
            else:
                self._attach()
        except BaseException as e:
            self._release_shm()
            disk = retry.transient(e) if role in ("embedded", "router") else None
            if disk is not None and not isinstance(e, FuseDBError):
                raise DiskError(disk.errno, f"cannot open {self.path}: {disk.strerror} while "
                                f"recovering it ({disk.filename or 'writing its files'}); "
                                f"nothing was changed or lost: free space (or fix the "
                                f"device) and open it again") from e
            raise
        if role != "worker":
            _open_stores.add(self)
        if role != "worker":
            signals.install(sigterm=role in ("embedded", "router"))

    # -- open (embedded, router) --------------------------------------------------------

    def _take_lock_file(self) -> None:
        """flock LOCK. The router's worker processes inherit the locked descriptor,
        so a database whose router died stays locked until its last worker has
        flushed its WAL ring and exited; ``open`` waits for that (up to
        ``close_timeout``) rather than recover under a worker still writing."""
        self._lockfd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.opts.close_timeout
        while True:
            try:
                fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if self._orphaned_workers() and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                os.close(self._lockfd)
                self._lockfd = -1
                raise LockedError(f"database {self.path} is open in another process; attach "
                                  f"to it with fusedb.connect(path) if it runs multiprocess") \
                    from None

    def _orphaned_workers(self) -> bool:
        """Whether LOCK is held only by worker processes of a router that died."""
        try:
            meta = Meta(region.name(self.tag, "meta"))
        except (posix_ipc.ExistentialError, RuntimeError):
            return False
        try:
            return meta.hdr[M_MODE] == MODE_MULTIPROCESS and not alive(meta.hdr[M_ROUTER_PID])
        finally:
            meta.close()

    def _open(self) -> None:
        opts = self.opts
        ident = identity.read(self.path)
        recovery.salvage(self.tag, self.path)
        region.remove_leftovers(self.tag)
        man = manifest.read(self.path)
        if man is None:
            s = opts.shards
            if opts.split_keys:
                bounds = [b""] + list(opts.split_keys)
            else:
                bounds = [b"" if i == 0 else bytes([256 * i // s]) for i in range(s)]
            n = len(bounds)
            man = ManifestData([LeafRecord(lo, 0, [], i * s // n) for i, lo in enumerate(bounds)],
                               1, {"shards": s})
        referenced = {s for lf in man.leaves for s in lf.segs}
        for segid in sorted(referenced):
            self.segcache[segid] = Segment(os.path.join(self.path, file_name(segid)), segid)
        self._remove_garbage(referenced)
        self.replayed, next_wal = recovery.replay(self.path, man, self.segcache, opts.clock())
        referenced = {s for lf in man.leaves for s in lf.segs}
        # The recorded layout options against the requested ones (after replay, the
        # segments hold everything, so what they hold can be measured if needed).
        layout = identity.reconcile(ident["layout"] if ident else None, opts,
                                    self._stored_maxima)
        if ident is None or ident["layout"] != layout:
            identity.write(self.path, layout)
        first_wal_no = max(next_wal.values(), default=0)
        nleaves = len(man.leaves)
        # Bound slots hold any stored key: a split may pick one as a bound.
        max_key = max([layout["max_key_size"]] + [len(lf.lo) for lf in man.leaves])
        max_leaves = max(opts.max_leaves, nleaves)
        multi = self.role == "router"
        arenas, rings = self._create_shm(max_leaves, max_key)
        meta = self.meta
        if multi:
            meta.hdr[M_MODE] = MODE_MULTIPROCESS
            meta.hdr[M_ROUTER_PID] = os.getpid()
            meta.set_options(opts.to_json())
        for ring in rings:
            ring.hdr[R_FILE_NO] = first_wal_no
        # Leaves keep their shard if the shard count is unchanged; otherwise they are
        # dealt out again in contiguous runs (buffers are empty at open, so it is free).
        keep = man.options.get("shards") == opts.shards
        for leaf_id, lf in enumerate(man.leaves):
            shard = lf.shard if keep else leaf_id * opts.shards // nleaves
            meta.init_leaf(leaf_id, shard, lf.seq, lf.segs)
        meta.route_write([(lf.lo, i) for i, lf in enumerate(man.leaves)])
        meta.hdr[M_NEXT_LEAF] = nleaves
        meta.hdr[M_NEXT_SEG] = max([man.next_seg] + [s + 1 for s in referenced])
        if multi:
            try:
                self._make_proc_locks(create=True)     # SharedMemoryError if /dev/shm is full
            except BaseException:
                self._close_regions(arenas, rings)
                raise
        else:
            # Embedded: one process owns the database (LOCK is held), so the locks are
            # thread locks. A posix_ipc semaphore works too, but every acquire of one
            # releases the GIL: with the worker thread busy each operation would pay a
            # GIL hand-off (measured: ~65 us).
            self.meta_lock = threading.Lock()
            self.manifest_lock = threading.Lock()
            self.wake_events = [threading.Event() for _ in range(opts.shards)]
            self.kick_events = [threading.Event() for _ in range(opts.shards)]
        for i in range(opts.shards):
            lock = self._shard_locks[i] if multi else threading.Lock()
            self.shards.append(Shard(self, i, lock, arenas[i], rings[i]))
        if multi:
            # Attached processes read shard membership from the manifest when they
            # repair a shard, so it must match this run's assignment from the start.
            self.write_manifest()
            for shard in self.shards:
                shard.flusher = RemoteFlusher(shard.ring, self.kick_events[shard.no],
                                              meta.stats, shard.no, meta.faults)
            self._start_worker_processes()
            return
        for shard in self.shards:
            f = Flusher(self.path, shard.no, shard.ring, opts.durability, opts.sync_interval,
                        opts.wal_file_bytes, kick=self.kick_events[shard.no], faults=meta.faults,
                        limit=opts.wal_limit_bytes, wake=self.wake_events[shard.no])
            shard.flusher = f
            self.flushers.append(f)
            f.start()
        for shard in self.shards:
            w = Worker(self, shard, self.wake_events[shard.no])
            self.workers.append(w)
            w.start()

    def _stored_maxima(self) -> dict:
        """The longest key and value in the open segments (bytes; 0 if none)."""
        k = v = 0
        for seg in self.segcache.values():
            if seg.count:
                run = seg.to_run()
                k, v = max(k, int(run.klen.max())), max(v, int(run.vlen.max()))
        return {"max_key_size": k, "max_value_size": v}

    def _create_shm(self, max_leaves: int, max_key: int) -> tuple[list[Arena], list[Ring]]:
        """Create (and reserve) the meta block and each shard's arena and WAL ring.
        Raises SharedMemoryError naming /dev/shm and the bytes needed when it has
        no room; what was created is then closed here and unlinked by the
        caller's _release_shm (its names are in self._unlink)."""
        opts, nm = self.opts, region.name
        sizes = (meta_region_bytes(max_leaves, max_key, opts.shards),
                 arena_region_bytes(opts.slabs_per_arena, opts.buffer_bytes),
                 RING_DATA_OFF + opts.wal_ring_bytes)
        free = region.free_bytes()
        arenas: list[Arena] = []
        rings: list[Ring] = []
        try:
            self.meta = Meta(nm(self.tag, "meta"), max_leaves, max_key, opts.shards,
                             create=True)
            self._unlink.append(("shm", nm(self.tag, "meta")))
            for i in range(opts.shards):
                arenas.append(Arena(nm(self.tag, f"arena{i}"), opts.slabs_per_arena,
                                    opts.buffer_bytes, opts.buffer_slots, create=True))
                self._unlink.append(("shm", nm(self.tag, f"arena{i}")))
                rings.append(Ring(nm(self.tag, f"wal{i}"), opts.wal_ring_bytes, create=True))
                self._unlink.append(("shm", nm(self.tag, f"wal{i}")))
        except SharedMemoryError as e:
            self._close_regions(arenas, rings)
            need = sizes[0] + opts.shards * (sizes[1] + sizes[2])
            raise SharedMemoryError(
                f"{region.SHM_DIR} has {free:,} bytes free and this database needs {need:,} "
                f"bytes of shared memory while open (a {sizes[0]:,}-byte meta block, and "
                f"per shard ({opts.shards}) a {sizes[1]:,}-byte arena and a {sizes[2]:,}-byte "
                f"WAL ring): {e}. Free space in {region.SHM_DIR} or enlarge it, or open with "
                f"a smaller arena_bytes or wal_ring_bytes or fewer shards") from e
        return arenas, rings

    @staticmethod
    def _close_regions(arenas: list[Arena], rings: list[Ring]) -> None:
        for r in arenas + rings:
            r.close()

    def _remove_garbage(self, referenced: set[int]) -> None:
        """Delete the garbage of this database's own files: temporary files of its
        publications (``seg-<16 hex>.fseg.tmp``, ``MANIFEST.tmp``, ``FUSEDB.tmp``:
        fusedb.core.fileio.publish names them ``<file>.tmp``) and segment files
        (``seg-<16 hex>.fseg`` with a segment's magic) the manifest does not name.
        Nothing else is touched, whatever its name (invariant 8)."""
        removed = 0
        for entry in os.scandir(self.path):
            if entry.is_file(follow_symlinks=False) and self._own_garbage(entry.name, referenced):
                os.unlink(entry.path)
                removed += 1
        if removed:
            log.info("removed %d unreferenced or temporary file(s) of %s", removed,
                     self.path)

    def _own_garbage(self, fn: str, referenced: set[int]) -> bool:
        tmp = fn.endswith(".tmp")
        base = fn[:-4] if tmp else fn
        if base in (manifest.FILE, identity.IDENTITY_FILE):
            return tmp
        if not (base.startswith("seg-") and base.endswith(".fseg")):
            return False
        try:
            segid = int(base[4:-5], 16)
        except ValueError:
            return False
        if segid < 0 or base != file_name(segid):
            return False           # not exactly the name FuseDB gives a segment
        if tmp:
            return True
        if segid in referenced:
            return False
        if _starts_with(os.path.join(self.path, fn), SEGMENT_MAGIC):
            return True
        log.warning("%s is not a segment (bad magic); left in place",
                    os.path.join(self.path, fn))
        return False

    # -- attach (worker, client) --------------------------------------------------------

    def _attach(self) -> None:
        nm = region.name
        try:
            self.meta = meta = Meta(nm(self.tag, "meta"))
        except posix_ipc.ExistentialError:
            raise NotRunningError(f"no database is open at {self.path}: open it with "
                                  f"fusedb.open(path, shards=N) first") from None
        if meta.hdr[M_MODE] != MODE_MULTIPROCESS:
            raise NotRunningError(f"the database at {self.path} is open in embedded mode; "
                                  f"only a multiprocess database (open(..., shards=N)) "
                                  f"accepts other processes")
        if meta.hdr[M_STATE] != STATE_OPEN or not alive(meta.hdr[M_ROUTER_PID]):
            raise NotRunningError(f"the database at {self.path} is closing or its router "
                                  f"process (pid {meta.hdr[M_ROUTER_PID]}) is gone")
        self.opts = opts = Options.from_json(meta.get_options())
        for i in range(meta.shards):
            arena = Arena(nm(self.tag, f"arena{i}"))
            ring = Ring(nm(self.tag, f"wal{i}"))
            self.shards.append(Shard(self, i, None, arena, ring))
        self._make_proc_locks(create=False)
        for shard in self.shards:
            shard.lock = self._shard_locks[shard.no]
            shard.flusher = RemoteFlusher(shard.ring, self.kick_events[shard.no], meta.stats,
                                          shard.no, meta.faults)
        if self.role == "worker":
            shard = self.shards[self.shard_no]
            f = Flusher(self.path, shard.no, shard.ring, opts.durability, opts.sync_interval,
                        opts.wal_file_bytes, kick=self.kick_events[shard.no],
                        error_flag=(meta.stats, shard.no * 8 + S_DISK_ERROR),
                        faults=meta.faults, limit=opts.wal_limit_bytes,
                        wake=self.wake_events[shard.no])
            shard.flusher = f
            self.flushers.append(f)

    def _make_proc_locks(self, create: bool) -> None:
        """The locks (robust mutexes in the meta block's lock slots, initialised
        here by the router: fusedb.shm.locks) and the named semaphores: per shard
        a wake-up for its worker and one for its flusher."""
        meta = self.meta
        n = meta.shards
        timeout = self.opts.lock_timeout

        def sem(what: str, value: int) -> posix_ipc.Semaphore:
            name = region.name(self.tag, what)
            if create:
                s = region.create_semaphore(name, value)
                self._unlink.append(("sem", name))
            else:
                s = posix_ipc.Semaphore(name)
            self._sems.append(s)
            return s

        self.wake_events = [SemEvent(sem(f"wake{i}", 0)) for i in range(n)]
        self.kick_events = [SemEvent(sem(f"kick{i}", 0)) for i in range(n)]
        if create:
            for j in range(n + 2):
                init_mutex(meta.lock_slot(j))
        else:
            mutex_size()      # this process's C library must agree with the slot size
        words = meta.locks
        self._shard_locks = [ProcLock(meta.lock_slot(i), words, i, timeout, f"shard {i} lock",
                                      wake=self.wake_events[i].set) for i in range(n)]
        self.meta_lock = ProcLock(meta.lock_slot(n), words, n, timeout, "meta lock",
                                  recover=meta.end_interrupted_change)
        # A manifest is published by rename: a dead holder leaves at most a temp file.
        self.manifest_lock = ProcLock(meta.lock_slot(n + 1), words, n + 1, timeout,
                                      "manifest lock", recover=lambda: None)
        self._proc_locks = self._shard_locks + [self.meta_lock, self.manifest_lock]

    # -- the router's worker processes ----------------------------------------------------

    def _spawn(self, no: int) -> subprocess.Popen:
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"]
                                        if env.get("PYTHONPATH") else "")
        self.meta.workers[no * 4 + W_PID] = 0
        # The worker inherits the locked LOCK descriptor (and nothing else): the
        # directory stays locked while any worker of this run lives.
        # Its stdout is not the application's: a worker outliving a killed router
        # must not hold the application's output pipe open.
        p = subprocess.Popen([sys.executable, "-m", "fusedb.worker.process", self.path, str(no)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
                             close_fds=True, pass_fds=(self._lockfd,))
        pin = self.opts.pin
        if pin:
            cpus = list(pin) if not isinstance(pin, bool) else \
                sorted(psutil.Process().cpu_affinity())
            psutil.Process(p.pid).cpu_affinity([cpus[no % len(cpus)]])
        return p

    def _wait_ready(self, no: int, p: subprocess.Popen, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.meta.workers[no * 4 + W_PID] != p.pid:
            if p.poll() is not None:
                raise FuseDBError(f"the worker process of shard {no} exited with code "
                                  f"{p.returncode} while starting (its stderr says why)")
            if time.monotonic() > deadline:
                p.kill()
                raise FuseDBError(f"the worker process of shard {no} did not start "
                                  f"within {timeout}s")
            time.sleep(0.005)

    def _start_worker_processes(self) -> None:
        self.procs = [self._spawn(i) for i in range(self.opts.shards)]
        for i, p in enumerate(self.procs):
            self._wait_ready(i, p)
        self._supervisor = threading.Thread(target=self._supervise, name="fusedb-supervisor",
                                            daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        """Restart dead workers; recover the meta and manifest locks of dead
        holders (any next locker would, but readers of the routing table spin on
        an odd seqlock without locking: Meta.end_interrupted_change)."""
        restarts = [0.0] * len(self.procs)
        while not self._closing.wait(0.05):
            for lock in (self.meta_lock, self.manifest_lock):
                lock.recover_if_dead()
            for no, p in enumerate(self.procs):
                if p is None or p.poll() is None or self._closing.is_set():
                    continue
                # Back off if it keeps dying (e.g. a disk error at start).
                if time.monotonic() < restarts[no]:
                    continue
                print(f"fusedb: worker of shard {no} (pid {p.pid}) exited with code "
                      f"{p.returncode}; restarting it", file=sys.stderr)
                try:
                    self.procs[no] = self._spawn(no)
                except OSError as e:
                    print(f"fusedb: could not restart worker {no}: {e}", file=sys.stderr)
                restarts[no] = time.monotonic() + 0.5

    # -- used by shards and workers ------------------------------------------------------

    def wake(self, shard_no: int) -> None:
        self.wake_events[shard_no].set()

    def kick_flusher(self, shard_no: int) -> None:
        self.kick_events[shard_no].set()

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise FuseDBError(f"the background merge worker failed: {self.error!r}") \
                from self.error

    def check_router(self) -> None:
        """In an attached process, on a slow path: raise ClosedError if the router
        is gone (if its workers died too, nobody marked the database closed)."""
        if self.role == "client" and not alive(self.meta.hdr[M_ROUTER_PID]):
            raise ClosedError(f"the database's router process (pid "
                              f"{self.meta.hdr[M_ROUTER_PID]}) is gone")

    def new_segment_id(self) -> int:
        with self.meta_lock:
            segid = self.meta.hdr[M_NEXT_SEG]
            self.meta.hdr[M_NEXT_SEG] = segid + 1
        return segid

    def new_leaf_id(self) -> int:
        """A fresh leaf id, or -1 when max_leaves are in use."""
        with self.meta_lock:
            leaf = self.meta.hdr[M_NEXT_LEAF]
            if leaf >= self.meta.max_leaves:
                return -1
            self.meta.hdr[M_NEXT_LEAF] = leaf + 1
        return leaf

    def open_segments(self, segids: list[int], missing_ok: bool = False,
                      verify: bool = False) -> list[Segment] | None:
        """The Segment objects of ``segids``, opening any not open yet (checking
        header and footer; with ``verify``, also each file's checksum: a merge
        verifies its inputs). With ``missing_ok``, a file deleted meanwhile
        (another process merged it away after the caller read the leaf's list)
        returns None instead of raising: the caller reads the leaf's list again."""
        cache = self.segcache
        out = []
        for segid in segids:
            seg = cache.get(segid)
            if seg is None:
                with self._segcache_lock:
                    seg = cache.get(segid)
                    if seg is None:
                        path = os.path.join(self.path, file_name(segid))
                        try:
                            seg = Segment(path, segid, verify=False)
                        except CorruptionError:
                            if missing_ok and not os.path.exists(path):
                                return None   # merged away by another process meanwhile
                            raise
                        cache[segid] = seg
                        self._opened += 1
                        if self._opened % 32 == 0:
                            self._prune_segcache()
            if verify:
                seg.verify()
            out.append(seg)
        return out

    def _prune_segcache(self) -> None:
        """Drop cached segments no leaf names any more (merged away by another
        process), so a long-lived process does not keep deleted files mapped. A
        concurrent reader still holding one keeps its mapping until it is done;
        a segment dropped by a racy read of the leaf table is simply reopened."""
        meta = self.meta
        nl = meta.hdr[M_NEXT_LEAF]
        live = set()
        for leaf in range(nl):
            live.update(meta.segs_of(leaf))
        for segid in [s for s in self.segcache if s not in live]:
            del self.segcache[segid]

    def write_new_segment(self, run) -> tuple[int, int]:
        """Write ``run`` as a segment under a fresh id and open it here, marked
        verified (this process checksummed the very bytes it wrote). Returns
        (segment id, file size)."""
        segid = self.new_segment_id()
        path = os.path.join(self.path, file_name(segid))
        nbytes = write_segment(path, run)
        try:
            seg, = self.open_segments([segid])
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)     # else garbage, deleted at the next open
            raise
        seg.verified = True
        return segid, nbytes

    def open_for_retry(self, segids: list[int], attempt: int) -> None:
        """For a reader that found a leaf's segments not open in this process yet
        (it retries its operation after this). A file deleted meanwhile (another
        process merged it away after the reader saw it named) is skipped and the
        reader looks again; after 100 attempts a missing file is corruption."""
        if self.open_segments(segids, missing_ok=attempt < 100) is None:
            time.sleep(0.0005)

    def forget_segments(self, segids: list[int]) -> None:
        """Drop segments no leaf names any more from this process's cache (the
        mapping is freed when the last reader lets go of it)."""
        with self._segcache_lock:
            for segid in segids:
                self.segcache.pop(segid, None)

    def after_publish(self, replaced: list[int]) -> None:
        """After a merge or split published: make the manifest durable, drop the WAL
        files it covers, then delete the segment files it no longer names (never
        before: a crash in between would leave a manifest naming deleted files).

        Raises OSError (labelled with its step, fusedb.core.retry) if a step fails;
        every step can simply be run again (the caller keeps ``replaced`` for
        that): the manifest is rewritten whole, and a file deleted by the failed
        attempt is skipped."""
        referenced, floors = self.write_manifest()
        with retry.step("WAL truncation"):
            for f in self.flushers:
                f.truncate(floors[f.shard])
        with retry.step("segment deletion"):
            for segid in replaced:
                if segid not in referenced:
                    self.forget_segments([segid])
                    failpoints.hit("segment.before_unlink")
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.path, file_name(segid)))

    def manifest_data(self) -> tuple[ManifestData, list[int]]:
        """A copy of every leaf's range, seqno and segments, and per shard the WAL
        position below which every record is materialised in those segments.

        Each shard is copied under its own lock (its merges, splits and repairs
        happen under it), one shard at a time, so no process ever waits on two
        shard locks; shards own disjoint key ranges, so the copies fit together."""
        meta = self.meta
        leaves: list[LeafRecord] = []
        floors = []
        for shard in self.shards:
            with shard.lock:
                # The first record of any buffer not merged yet. Every slab in use is
                # some leaf's active or frozen buffer, so walking the arena (a fixed,
                # small number of slabs) finds them all.
                firsts = [slab.first_pos() for slab in shard.slabs
                          if slab.hdr[H_STATE] != STATE_FREE and slab.hdr[H_USED]]
                floors.append(min(firsts, default=shard.ring.hdr[R_HEAD]))
                with self.meta_lock:
                    bounds, ids = meta.routes()
                for lo, leaf in zip(bounds, ids):
                    if meta.shard[leaf] == shard.no:
                        leaves.append(LeafRecord(lo, meta.mseq[leaf], meta.segs_of(leaf),
                                                 shard.no))
        with self.meta_lock:
            next_seg = meta.hdr[M_NEXT_SEG]
        leaves.sort(key=lambda lf: lf.lo)
        return ManifestData(leaves, next_seg, {"shards": meta.shards}), floors

    def write_manifest(self) -> tuple[set[int], list[int]]:
        """Write the manifest; return the segment ids it names and the WAL floors."""
        with self.manifest_lock:
            data, floors = self.manifest_data()
            with retry.step("manifest write"):
                manifest.write(self.path, data)
        return {s for lf in data.leaves for s in lf.segs}, floors

    def flush(self) -> None:
        """Have every worker merge all buffers to segments; wait for it.

        Raises DiskError if a worker's merges fail with a disk error meanwhile
        (nothing is lost: the writes stay in the buffers and the WAL, and the
        worker keeps retrying in the background)."""
        if self.role == "embedded":
            events = [w.request_flush() for w in self.workers]
            for ev in events:
                while not ev.wait(0.1):
                    self.check()
            self.check()
            for w, ev in zip(self.workers, events):
                if ev.error is not None:
                    self._flush_failed(w.shard.no, ev.error)
            return
        slots = self.meta.workers
        faults = self.meta.faults
        wanted = []
        for shard in self.shards:
            failures = faults[shard.no * retry.F_WORDS + retry.F_FAILURES[retry.WORKER]]
            with shard.lock:     # requests from several processes must not collide
                req = slots[shard.no * 4 + W_FLUSH_REQ] + 1
                slots[shard.no * 4 + W_FLUSH_REQ] = req
            wanted.append((req, failures))
            self.wake(shard.no)
        deadline = time.monotonic() + self.opts.close_timeout
        for shard, (req, failures) in zip(self.shards, wanted):
            base = shard.no * retry.F_WORDS
            while slots[shard.no * 4 + W_FLUSH_DONE] < req:
                if self.meta.hdr[M_STATE] != STATE_OPEN:
                    raise ClosedError("the database closed during flush()")
                if faults[base + retry.F_FAILURES[retry.WORKER]] != failures:
                    packed = faults[base + retry.F_CURRENT[retry.WORKER]]
                    if packed:
                        no = packed >> 8
                        self._flush_failed(shard.no, OSError(no, os.strerror(no)),
                                           retry.describe(packed))
                    failures = faults[base + retry.F_FAILURES[retry.WORKER]]
                if time.monotonic() > deadline:
                    raise FuseDBError(f"the worker of shard {shard.no} did not flush within "
                                      f"close_timeout={self.opts.close_timeout}s")
                self.check_router()
                time.sleep(0.002)

    def _flush_failed(self, shard_no: int, error: BaseException, what: str | None = None):
        err = retry.transient(error) or error
        raise DiskError(f"flush() could not merge shard {shard_no}: {what or err}; nothing "
                        f"is lost (the writes are in the buffers and the WAL) and the "
                        f"merge is retried in the background") from err

    # -- repair (the shard's worker process) --------------------------------------------

    def repair_shard(self, shard: Shard) -> list[int]:
        """Rebuild ``shard`` from disk after a process died holding its lock.

        The caller (the shard's worker, the only repairer) holds the lock, which
        it acquired after its holder died (ProcLock.acquire_for_repair). The
        shard's buffers may be half-written, so they are dropped: every acknowledged
        write is in the WAL ring (invariant 1). The ring is flushed to the WAL file,
        the shard's leaves are read back from the durable MANIFEST, the WAL records
        newer than each leaf's segments are merged into new segments, and the result
        is published in shared memory (a fresh arena, new leaf entries, the shard's
        part of the routing table). Returns the segments the new ones replace, for
        :meth:`after_publish` once the lock is released (with those the shard's
        merges replaced since their last commit). A record whose writer died
        before acknowledging it may or may not survive, as with any crash."""
        meta, opts = self.meta, self.opts
        no = shard.no
        flusher = shard.flusher
        flusher.sync_now()
        man = manifest.read(self.path)
        mine = [lf for lf in man.leaves if lf.shard == no]
        his = [i for i, lf in enumerate(man.leaves) if lf.shard == no]
        his_hi = [man.leaves[i + 1].lo if i + 1 < len(man.leaves) else None for i in his]
        files = list_wal_files(self.path).get(no, [])
        wfs = [read_file(p, last=i == len(files) - 1) for i, (_n, p) in enumerate(files)]
        muts = recovery.newest_entries(wfs) if any(len(wf.muts) for wf in wfs) else None
        now = opts.clock()
        replaced: list[int] = []
        new_leaves = []
        written: list[int] = []
        try:
            for lf, hi in zip(mine, his_hi):
                segs, seq = list(lf.segs), lf.seq
                if muts is not None:
                    out, seq = recovery.fold_leaf(
                        muts, lf.lo, hi, lf.seq,
                        lambda: [seg.to_run() for seg in self.open_segments(lf.segs,
                                                                             verify=True)],
                        now)
                    if out is not None:
                        replaced += segs
                        segs = []
                        if len(out):
                            segid, _nbytes = self.write_new_segment(out)
                            written.append(segid)
                            segs = [segid]
                        del out
                new_leaves.append((lf.lo, seq, segs))
        except BaseException:
            # Nothing is published yet: remove this attempt's files (a disk error
            # is retried by the worker, and a full disk needs the space back).
            shard.discard_segments(written)
            raise
        del muts, wfs
        # Publish, in one meta-lock section (a split of another shard must not slip
        # in between reading the routing table and writing it): the shard's leaf
        # ids are reused, new ones taken if it had fewer; a fresh arena.
        arena = shard.arena
        for i in range(arena.nslabs):
            arena.free[i] = arena.nslabs - 1 - i
            shard.slabs[i].hdr[H_STATE] = STATE_FREE
        arena.hdr[A_FREE_TOP] = arena.nslabs
        with self.meta_lock:
            bounds, ids = meta.routes()
            old_ids = [leaf for leaf in ids if meta.shard[leaf] == no]
            while len(old_ids) < len(new_leaves):
                leaf = meta.hdr[M_NEXT_LEAF]
                if leaf >= meta.max_leaves:
                    raise FuseDBError("repair needs a leaf id and max_leaves are in use")
                meta.hdr[M_NEXT_LEAF] = leaf + 1
                old_ids.append(leaf)
            entries = [(lo, leaf) for lo, leaf in zip(bounds, ids) if meta.shard[leaf] != no]
            for leaf, (lo, seq, segs) in zip(old_ids, new_leaves):
                meta.init_leaf(leaf, no, seq, segs)
                entries.append((lo, leaf))
            entries.sort()
            meta.route_write(entries)
        self.repairs += 1
        # Segments a merge of this shard replaced whose manifest was not written yet
        # (the round stopped at the dead holder's lock) are superseded too: the
        # caller deletes them once, with the repair's, unless the new state names
        # them. Left in shard.replaced, the next commit would delete them again.
        replaced += [s for s in shard.replaced if s not in replaced]
        shard.replaced = []
        return replaced

    # -- close ------------------------------------------------------------------------------

    def close(self) -> None:
        """Embedded and router: stop workers, merge every buffer to segments, write
        the manifest, remove all shared memory (even if the flush fails). Client:
        detach. A store inherited through fork() is left alone."""
        if self.meta is None:
            return
        _open_stores.discard(self)
        if self.inherited:
            self.meta = None
            return
        if self.role == "client":
            self._release_shm()
            return
        if self.role == "router":
            self._close_router()
            return
        disk_error = None
        try:
            for w in self.workers:
                w.stop()
            self.workers = []
            # WAL first: what the ring holds reaches the file before merging, so a
            # failure below still leaves every acknowledged write in the log.
            for f in self.flushers:
                try:
                    f.stop()
                except DiskError as e:
                    disk_error = disk_error or e
            self.flushers = []
            if disk_error is not None:
                # The rings hold acknowledged records no file has: leave them in
                # /dev/shm for the next open to salvage (recovery.salvage).
                self._keep_rings()
            if self.error is None and disk_error is None:
                try:
                    self._flush_all()
                    self.write_manifest()
                    self._delete_wal()
                except OSError as e:
                    if retry.transient(e) is None:
                        raise
                    # The WAL is whole on disk (the flushers stopped cleanly) and
                    # nothing it holds is deleted before a manifest covers it.
                    traceback.clear_frames(e.__traceback__)   # views of the arena
                    disk_error = DiskError(
                        f"close() could not merge the buffers into segments: {e}; nothing "
                        f"is lost: the WAL holds every write and the next open replays it")
                    disk_error.__cause__ = e
        finally:
            self._release_shm()
        self.check()
        if disk_error is not None:
            raise disk_error

    def _keep_rings(self) -> None:
        self._unlink = [(k, nm) for k, nm in self._unlink
                        if not nm.rsplit("-", 1)[-1].startswith("wal")]

    def _delete_wal(self) -> None:
        """Every record is in a segment named by a durable manifest: drop the WAL."""
        for files in list_wal_files(self.path).values():
            for _no, path in files:
                os.unlink(path)

    def _close_router(self) -> None:
        """Close a multiprocess database: refuse new operations everywhere, let each
        worker merge its shard and exit, then write the manifest and clean up. A
        worker that fails to exit is killed; its ring is flushed to the WAL here and
        the WAL kept for the next open to replay."""
        meta = self.meta
        self._closing.set()
        clean = False
        disk = False
        try:
            if self._supervisor is not None:
                self._supervisor.join()
            with self.meta_lock:
                meta.close_routing()
            for shard in self.shards:
                # Wait out any writer inside its critical section; later ones see
                # the closed state under the lock and raise ClosedError.
                try:
                    with shard.lock:
                        pass
                except FuseDBError:
                    pass     # a dead holder: the worker's exit path does not need it
            for no in range(len(self.procs)):
                self.wake(no)
            clean = True
            for no, p in enumerate(self.procs):
                try:
                    code = p.wait(self.opts.close_timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    code = p.wait()
                if code != 0:
                    clean = False
                    disk = disk or code == retry.EXIT_DISK_ERROR
                    self._salvage_ring(self.shards[no])
            if clean:
                try:
                    self.write_manifest()
                    self._delete_wal()
                except OSError as e:
                    if retry.transient(e) is None:
                        raise
                    raise DiskError(f"close() could not write the manifest: {e}; nothing is "
                                    f"lost: the WAL is kept and the next open replays it") \
                        from e
        finally:
            for p in self.procs:
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
            self.procs = []
            self._release_shm()
        if not clean:
            if disk:
                raise DiskError("a worker process met a disk error while closing (its log "
                                "line says which); its WAL was kept and the next open "
                                "replays it (nothing acknowledged is lost)")
            raise FuseDBError("a worker process failed while closing; its WAL was kept and "
                              "the next open replays it (nothing acknowledged is lost)")

    def _salvage_ring(self, shard: Shard) -> None:
        """Write what a dead worker's ring holds to its WAL file (fsynced)."""
        f = Flusher(self.path, shard.no, shard.ring, "sync", 0.0, self.opts.wal_file_bytes)
        f.flush(fsync=True)
        os.close(f.fd)
        if f.error is not None:
            self._keep_rings()

    def _flush_all(self) -> None:
        """Close-time flush, run by the closing thread after the workers stopped."""
        for shard in self.shards:
            self.flush_shard(shard)

    def flush_shard(self, shard: Shard) -> None:
        meta = self.meta
        with self.meta_lock:
            _bounds, ids = meta.routes()
        for leaf in ids:
            if meta.shard[leaf] == shard.no:
                shard.flush_leaf(leaf)

    def _release_shm(self) -> None:
        """Stop threads, unmap, unlink the shared-memory names (router and embedded
        only), close semaphores, release LOCK. Every step runs even if an earlier
        one fails (a view still held by a live scan iterator makes an unmap fail);
        the first failure is raised at the end."""
        errors: list[BaseException] = []

        def attempt(fn, *args) -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - collected, the first one re-raised
                errors.append(e)

        # Names first: unlinking needs nothing else to succeed, and it is what
        # keeps /dev/shm clean whatever happens below.
        for kind, nm in self._unlink:
            if kind == "shm":
                attempt(posix_ipc.unlink_shared_memory, nm)
            else:
                attempt(posix_ipc.unlink_semaphore, nm)
        self._unlink = []
        self._closing.set()
        for w in self.workers:
            attempt(w.stop)
        self.workers = []
        for f in self.flushers:
            f.stopping.set()
            f.kick.set()
            if f.is_alive():
                f.join()
            if f.fd >= 0:
                attempt(os.close, f.fd)
        self.flushers = []
        for seg in self.segcache.values():
            attempt(seg.close)
        self.segcache.clear()
        for shard in self.shards:
            attempt(shard.arena.close)
            attempt(shard.ring.close)
        self.shards = []
        for s in self._sems:
            attempt(s.close)
        self._sems = []
        for lock in self._proc_locks:
            lock.close()       # drops its view of the meta block before the unmap
        self._proc_locks = []
        if self.meta is not None:
            attempt(self.meta.close)
            self.meta = None
        if self._lockfd >= 0:
            attempt(fcntl.flock, self._lockfd, fcntl.LOCK_UN)
            attempt(os.close, self._lockfd)
            self._lockfd = -1
        if errors:
            raise errors[0]
