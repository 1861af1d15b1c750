"""The executor: the one place an operation on the data runs.

Every operation goes route -> lock -> recheck the routing version -> apply ->
(stall and retry | open segments and retry) -> wait until durable (sync mode).
:meth:`Executor.run` is that loop, the only one; what is applied is a command
(:class:`Command`): a point operation (:class:`Read`, :class:`Write`,
:class:`Modify`), a batch (fusedb.api.batch) or a scan's leaf snapshot
(fusedb.api.scan).

``put``, ``get`` and ``incr`` are the hot path: :meth:`Executor.put`,
:meth:`Executor.get` and :meth:`Executor.incr` make one attempt inline, with no
command object (``FuseDB`` checks the usual arguments inline, so a ``put`` is
no deeper in Python calls than before the executor), and hand anything but the
plain case (the route moved under them, no room, a segment not open yet, a
counter not in the active buffer) to :meth:`run` as a command, which retries it
from scratch.
See docs/design.md, "Point operations".
"""

from __future__ import annotations

import threading
import time

from fusedb.core import kernel, ops, retry
from fusedb.core.entry import KIND_VALUE, key_hash
from fusedb.errors import DiskError, InvalidArgumentError, WriteStallError
from fusedb.runtime import signals
from fusedb.shard.shard import NO_ROOM, segments_entry
from fusedb.shm.meta import M_ROUTE_VER, S_LOGICAL, S_STALLS
from fusedb.shm.routes import RouteCache
from fusedb.wal.ring import R_WAL_BYTES

#: Outcomes of :meth:`Command.apply_locked`, each with its argument:
#: DONE: applied; the (shard, WAL position) pairs to wait for in sync mode.
#: SEGMENTS: nothing applied; segment ids to open (outside the locks), then retry.
#: STALL: nothing applied; no room now in this shard: wait (Executor.stall), retry.
#: MOVED: nothing applied; the routing changed: route again.
DONE, SEGMENTS, STALL, MOVED = 0, 1, 2, 3


class Command:
    """One operation for :meth:`Executor.run`. Made and run by one thread.

    ``route`` (no lock held) returns the shards to lock, in ascending shard
    number (the global lock order); ``apply_locked`` runs under all their locks
    and returns ``(outcome, argument)``; when it returns DONE it has set
    ``result``, what ``run`` returns. Either may raise: nothing is then written
    (``apply_locked`` checks everything before its first write)."""

    __slots__ = ("result",)

    def route(self, x: Executor) -> tuple:
        raise NotImplementedError

    def apply_locked(self, x: Executor) -> tuple:
        raise NotImplementedError


class KeyCommand(Command):
    """A point operation on one key (hash ``h``); subclasses define
    ``apply_leaf_locked(x, shard, leaf)``, called once the route is rechecked."""

    __slots__ = ("key", "h", "ver", "leaf", "shard")

    def __init__(self, key: bytes, h: int):
        self.key = key
        self.h = h

    def route(self, x: Executor) -> tuple:
        self.ver, self.leaf = x.routes.route(self.key)
        self.shard = x.shards[x.meta.shard[self.leaf]]
        return (self.shard,)

    def apply_locked(self, x: Executor) -> tuple:
        if x.hdr[M_ROUTE_VER] != self.ver:
            return MOVED, None
        return self.apply_leaf_locked(x, self.shard, self.leaf)


class Read(KeyCommand):
    """Read-only point command: the result is the key's entry (fusedb.core.ops:
    (kind, payload, exp)) or None. Made on the caller's thread, any process, by
    :meth:`Executor.get` (when its inline attempt did not apply) and
    :meth:`Executor.read` (``FuseDB.ttl``); :meth:`Executor.run` calls
    ``apply_leaf_locked`` under the key's shard lock, which reads the leaf's
    buffers and, if the key is in neither, its open segments."""

    __slots__ = ()

    def apply_leaf_locked(self, x: Executor, shard, leaf: int) -> tuple:
        e, missing = shard.read_locked(leaf, self.key, self.h)
        if missing is not None:
            return SEGMENTS, missing
        self.result = e
        return DONE, ()



class Write(KeyCommand):
    """Blind write command of ``write`` = (kind, value, ivalue, exp): an
    entry.KIND_*, the bytes (KIND_VALUE), the int64 (KIND_INT), the absolute
    expiry in seconds (0.0: never); the result is None. Made on the caller's
    thread, any process, by :meth:`Executor.put` when its inline attempt did not
    apply (route moved, no room); :meth:`Executor.run` applies it under the
    key's shard lock, and on STALL waits with no lock held and tries again."""

    __slots__ = ("write",)

    def __init__(self, key: bytes, h: int, write: tuple):
        super().__init__(key, h)
        self.write = write

    def apply_leaf_locked(self, x: Executor, shard, leaf: int) -> tuple:
        self.result = None
        return x.write_locked(shard, leaf, self.key, self.h, self.write)


class Modify(Read):
    """Read-modify-write command: ``fn(entry) -> (result, write or None)`` (the
    ``fusedb.core.ops.op_*`` functions) runs under the key's shard lock; a write
    it returns is applied there too. ``fn`` raising writes nothing. Made on the
    caller's thread, any process, by :meth:`Executor.incr` (when the in-place
    update does not apply) and :meth:`Executor.modify` (``FuseDB.delete``,
    ``expire``, ``update``); run by :meth:`Executor.run`, which calls ``fn``
    again, under the lock, after a write of it found no room (STALL)."""

    __slots__ = ("fn",)

    def __init__(self, key: bytes, h: int, fn):
        self.key = key      # (KeyCommand.__init__ inlined: one call less per operation)
        self.h = h
        self.fn = fn

    def apply_leaf_locked(self, x: Executor, shard, leaf: int) -> tuple:
        e, missing = shard.read_locked(leaf, self.key, self.h)
        if missing is not None:
            return SEGMENTS, missing
        self.result, write = self.fn(e)
        if write is None:
            return DONE, ()
        return x.write_locked(shard, leaf, self.key, self.h, write)


class Executor:
    """Runs operations on one open database's shards, from any thread of the
    process holding the handle (FuseDB, Batch and scans call it); takes the
    shard locks itself, never holds one when it returns or raises.

    ``store`` is the process's open database (fusedb.runtime): its ``opts``,
    ``meta``, ``shards``, ``segcache``, ``check()``, ``check_router()``,
    ``open_for_retry()`` and ``kick_wal_writer()`` are used."""

    def __init__(self, store):
        self.store = store
        self.opts = opts = store.opts
        self.meta = store.meta
        self.shards = store.shards
        self.routes = RouteCache(store.meta)
        self.clock = opts.clock
        self.sync = opts.durability == "sync"
        self.hdr = store.meta.hdr
        #: Threads running an application callback (``update()``'s fn) under a
        #: shard lock: an operation from one of them would wait for ever on the
        #: lock it holds (embedded) or fail on it (multiprocess), so it raises.
        #: Also signals.PENDING while a signal waits to act. Every operation
        #: (the kernel's too) leaves its fast path for :meth:`reentered` while
        #: the set is not empty.
        self.fn_threads: set[int] = set()
        signals.watch(self)
        #: The compiled kernel's put/get/incr over this database
        #: (fusedb.core._kernel.Kernel), or None: pure Python (fusedb.core.kernel
        #: says why). It calls this executor's put, get_value and incr for every
        #: case but the plain one. Released by the runtime before it unmaps.
        self.kernel = kernel.kernel.Kernel(self) if kernel.COMPILED else None
        if self.kernel is not None:
            store.kernels.append(self.kernel)

    # -- application callbacks -------------------------------------------------------

    def user_fn(self, fn):
        """``fn`` wrapped for running under shard locks: while it runs, a call
        from it back into this database raises InvalidArgumentError
        (:meth:`reentered`) instead of deadlocking, and a signal (Ctrl-C) acts
        inside it at once (fusedb.runtime.signals.call_user)."""
        busy = self.fn_threads
        call_user = signals.call_user

        def guarded(arg):
            tid = threading.get_ident()
            busy.add(tid)
            try:
                return call_user(fn, arg)
            finally:
                busy.discard(tid)
        return guarded

    def reentered(self) -> None:
        """Called at the start of every operation while ``fn_threads`` is not
        empty, with no lock held: act on a signal noted inside FuseDB
        (fusedb.runtime.signals: KeyboardInterrupt, SystemExit; main thread
        only), and raise InvalidArgumentError if this thread is inside a
        callback of :meth:`user_fn`."""
        if signals.PENDING in self.fn_threads:
            signals.raise_pending()
        if threading.get_ident() in self.fn_threads:
            raise InvalidArgumentError(
                "update()'s or transact()'s fn called the database: fn runs under shard "
                "locks, which the call would need (a deadlock); compute from what fn is "
                "given, and use the database before or after")

    # -- the loop ------------------------------------------------------------------

    def run(self, cmd: Command):
        """Run ``cmd`` until it is applied; returns its result. Raises what it
        raises, WriteStallError or DiskError (:meth:`stall`), LockTimeoutError;
        then nothing of it was applied."""
        if self.fn_threads:
            self.reentered()
        deadline = None
        attempt = 0
        while True:
            shards = cmd.route(self)
            held = 0
            try:
                for shard in shards:
                    shard.lock.acquire()
                    held += 1
                outcome, arg = cmd.apply_locked(self)
            finally:
                while held:
                    held -= 1
                    shards[held].lock.release()
            if outcome == DONE:
                if self.sync:
                    for shard, end in arg:
                        shard.wal_writer.wait_durable(end)
                return cmd.result
            if outcome == SEGMENTS:
                attempt += 1
                self.store.open_for_retry(arg, attempt)
            elif outcome == STALL:
                deadline = self.stall(arg, deadline)

    def write_locked(self, shard, leaf: int, key: bytes, h: int, write: tuple) -> tuple:
        """Apply ``write`` = (kind, value, ivalue, exp) to ``key`` (under the
        shard's lock) and count its logical bytes; an outcome for :meth:`run`."""
        kind, value, ivalue, exp = write
        end = shard.write_locked(leaf, key, h, kind, value, ivalue, exp)
        if end == NO_ROOM:
            return STALL, shard
        shard.stats[S_LOGICAL] += ops.logical_bytes(key, kind, value)
        return DONE, ((shard, end),)

    def stall(self, shard, deadline: float | None) -> float:
        """Wait a little for the worker to free buffer memory, or for WAL ring
        space (the WAL writer writing it out, or merges bringing the WAL files on
        disk under ``wal_limit_bytes``); raise once the wait passes
        ``write_timeout``. Returns the deadline for the next call. No lock held.

        Raises DiskError if the WAL cannot be written and the ring is over half
        full; WriteStallError when the wait passes ``write_timeout`` (saying
        whether the WAL limit held the write back, and any background error)."""
        signals.raise_pending()     # no lock is held here: a deferred signal acts now
        now = time.monotonic()
        if shard.wal_writer.error is not None and shard.ring.free() < shard.ring.cap // 2:
            raise DiskError(f"the WAL cannot be written ({shard.wal_writer.error}); the write "
                            f"was not applied; reads still work") from shard.wal_writer.error
        opts = self.opts
        if deadline is None:
            return now + opts.write_timeout
        if now > deadline:
            with shard.lock:
                shard.stats[S_STALLS] += 1
            why = retry.shard_state(self.meta.shard_faults(shard.no))["background_error"]
            limit = opts.wal_limit_bytes
            if shard.ring.hdr[R_WAL_BYTES] >= limit:
                what = (f"the WAL of shard {shard.no} on disk reached its limit ({limit} bytes: "
                        f"wal_max_bytes + wal_file_bytes) and no merge let its oldest files "
                        f"be deleted within write_timeout={opts.write_timeout}s")
            else:
                what = f"no buffer memory freed within write_timeout={opts.write_timeout}s"
            raise WriteStallError(what + "; the write was not applied"
                                  + (f" (merges cannot run: {why}; they are retried and "
                                     f"writes go on once they succeed)" if why else ""))
        self.store.check()
        self.store.check_router()
        time.sleep(0.0005)
        return deadline

    # -- the hot path: one inline attempt, then the loop ---------------------------

    def put(self, key: bytes, value: bytes, exp: float) -> None:
        """Store ``value`` (validated) under ``key``; ``exp``: absolute expiry or 0.0."""
        if self.fn_threads:
            self.reentered()
        h = key_hash(key)
        ver, leaf = self.routes.route(key)
        shard = self.shards[self.meta.shard[leaf]]
        lock = shard.lock
        end = NO_ROOM
        lock.acquire()
        try:
            if self.hdr[M_ROUTE_VER] == ver:
                end = shard.write_locked(leaf, key, h, KIND_VALUE, value, 0, exp)
                if end != NO_ROOM:
                    shard.stats[S_LOGICAL] += len(key) + len(value)
        finally:
            lock.release()
        if end == NO_ROOM:
            self.run(Write(key, h, (KIND_VALUE, value, 0, exp)))
        elif self.sync:
            shard.wal_writer.wait_durable(end)

    def get(self, key: bytes):
        """The entry of ``key`` (fusedb.core.ops), or None. Segments are searched
        after the lock is released, on segment objects taken under it."""
        if self.fn_threads:
            self.reentered()
        h = key_hash(key)
        ver, leaf = self.routes.route(key)
        shard = self.shards[self.meta.shard[leaf]]
        lock = shard.lock
        e = segs = None
        lock.acquire()
        try:
            if self.hdr[M_ROUTE_VER] == ver:
                e = shard.read_buffers_locked(leaf, key, h)
                if e is None:
                    segs = shard.segments_locked(leaf)
        finally:
            lock.release()
        if e is not None:
            return e
        if segs is None:    # the route moved, or a segment is not open here yet
            return self.run(Read(key, h))
        return segments_entry(segs, key, h)

    def get_value(self, key: bytes) -> bytes | None:
        """What ``FuseDB.get`` returns for ``key`` before its default (the value,
        or None: fusedb.core.ops.value_of)."""
        return ops.value_of(self.get(key), self.clock)

    def incr(self, key: bytes, delta: int, now: float, exp_new: float = 0.0,
             xx: bool = False) -> int | None:
        """Add ``delta`` (validated) to the counter at ``key``; the new value. A
        key this creates expires at ``exp_new`` (absolute, 0.0: never); with
        ``xx`` none is created (the result is None). The in-place update when
        the key is a live counter in its active buffer (never a creation), else
        read-modify-write (fusedb.core.ops.op_incr; raises as it does)."""
        if self.fn_threads:
            self.reentered()
        h = key_hash(key)
        ver, leaf = self.routes.route(key)
        shard = self.shards[self.meta.shard[leaf]]
        done = None
        with shard.lock:
            if self.hdr[M_ROUTE_VER] == ver:
                done = shard.incr_in_place_locked(leaf, key, h, delta, now)
                if done is not None:
                    shard.stats[S_LOGICAL] += len(key) + 8
        if done is None:
            return self.run(Modify(key, h, ops.op_incr(key, delta, now, exp_new, xx)))
        if self.sync:
            shard.wal_writer.wait_durable(done[1])
        return done[0]

    def modify(self, key: bytes, fn):
        """Run ``fn`` (an ``fusedb.core.ops.op_*`` function) on ``key``'s entry
        under its shard lock, storing what it returns; its result. (The compiled
        kernel's ``modify`` falls back to this.)"""
        return self.run(Modify(key, key_hash(key), fn))

    def read(self, key: bytes):
        """``key``'s entry or None, read under its shard lock."""
        return self.run(Read(key, key_hash(key)))
