"""Locks of one database, and how a lock whose holder died is recognised and repaired.

Embedded mode uses ``threading.Lock`` (one process; see docs/design.md, "Why the
embedded locks are thread locks"). Multiprocess mode uses :class:`ProcLock`: a
**process-shared robust pthread mutex** (``PTHREAD_PROCESS_SHARED`` +
``PTHREAD_MUTEX_ROBUST``) living in the meta block's lock slots, as LMDB uses on
Linux (its ``MDB_USE_ROBUST``). It is reached from pure Python through ctypes;
the compiled kernel calls the same functions on the same bytes
(docs/format.md, "Lock slots"; offsets: fusedb.core.layout L_*). The ctypes
binding of the pthread calls is fusedb.shm.mutex; this module is the locking
protocol on top of it.

Why robust: ownership is recorded atomically with the acquisition. The kernel-
visible futex word holds the owner's thread id from the very compare-and-swap
that takes the lock, and glibc registers the mutex on the thread's *robust list*
(with ``list_op_pending`` covering the instant of acquisition itself) before
the CAS. When a thread ends (SIGKILL of its process, ``exec``, a thread that
returns holding the lock), the kernel walks that list and sets
``FUTEX_OWNER_DIED`` in every mutex the thread held, waking a waiter; the next
locker gets ``EOWNERDEAD`` and owns the lock. There is no window in which a dead
owner goes unrecognised (the semaphore + holder-slot scheme this replaces had
one: a process killed between taking the semaphore and writing its slot wedged
the shard until a reopen). See pthread_mutexattr_setrobust(3) and the kernel's
Documentation/locking/robust-futexes.rst.

What ``EOWNERDEAD`` means, per lock (whoever gets it first handles it; the
mutex makes that one process, so two never race):

* **shard lock**: the holder died inside its critical section, so the shard's
  buffers may be half-written. The locker marks the mutex consistent, sets the
  slot's *repair flag* and hands the shard to its repairer, the shard's worker
  (fusedb.worker.process; fusedb.worker.repair rebuilds the shard from the WAL).
  If the locker is that worker (``repairer``), it raises :class:`RepairNeeded`
  after unlocking and repairs at the top of its loop; anyone else unlocks,
  wakes the worker and waits, like any waiter, until the flag is clear. Every
  locker checks the flag right after acquiring, so nobody works on a shard
  while it needs repair. A process that held several shard locks (a batch)
  leaves several flagged shards, each repaired by its own worker; a repair
  takes only its shard lock and the meta lock (innermost), so two workers never
  wait for each other.
* **meta lock** and **manifest lock**: their critical sections leave nothing
  half-done (routing changes are double-buffered and switched by one store; a
  manifest is published by rename), so the new holder runs ``recover`` (the
  meta lock's ends an interrupted seqlock update: fusedb.shm.meta), marks the
  mutex consistent and goes on. The router's supervisor also looks every 50 ms
  (:meth:`ProcLock.recover_if_dead`), because readers of the routing table
  spin on an odd seqlock without taking the lock.

Waiting. The fast path is one ``pthread_mutex_trylock`` through
``ctypes.PyDLL`` (keeps the GIL: it never blocks, so no thread of this process
that holds the mutex can be kept from releasing it). On ``EBUSY`` the slow path
waits with the GIL released (``ctypes.CDLL``) in slices of at most
:data:`_SLICE` seconds (``pthread_mutex_clocklock`` on CLOCK_MONOTONIC, or
``pthread_mutex_timedlock`` on CLOCK_REALTIME where glibc < 2.30), so between
slices it runs the worker's ``stuck`` check (ProcLock), lets Python signal handlers
run, and gives up after ``timeout`` seconds with LockTimeoutError: no process
hangs on a lock.

Limits. A holder that is alive but stopped (SIGSTOP, a debugger) or stalled
keeps the lock: waiters get LockTimeoutError naming its pid, and nothing is
taken over from a live process. Ownership belongs to a *thread*: the thread that
acquired releases (``release`` from another thread raises FuseDBError), a
``fork()`` child does not inherit a lock its parent holds (the parent's death
is recognised even while the child lives), and a thread that ends holding a
lock counts as dead. All processes must share one PID namespace (the futex word
holds thread ids as the kernel numbers them there).
"""

from __future__ import annotations

import errno
import functools
import logging
import threading
import time

import posix_ipc
import psutil

from fusedb.core import failpoints
from fusedb.core.layout import L_FUTEX, L_OWNER, L_REPAIR, LOCK_WORDS
from fusedb.errors import ClosedError, FuseDBError, LockTimeoutError
# Names other modules import from here.
from fusedb.shm.mutex import LOCK_BYTES, init_mutex, mutex_size  # noqa: F401
from fusedb.shm.mutex import (FUTEX_OWNER_DIED, FUTEX_TID_MASK, Timespec as _Timespec,
                              consistent as _consistent, lock_clock as _lock_clock,
                              lock_until as _lock_until, pid_of as _pid_of, trylock as _trylock,
                              unlock as _unlock)

log = logging.getLogger("fusedb")

_EBUSY, _EOWNERDEAD, _ETIMEDOUT = errno.EBUSY, errno.EOWNERDEAD, errno.ETIMEDOUT

#: Length of one blocking wait (seconds): between two, the ``stuck`` check, signal
#: handlers and the overall timeout get their turn.
_SLICE = 0.02
#: Poll interval while a shard is being repaired by its worker (seconds).
_REPAIR_POLL = 0.002


class RepairNeeded(Exception):
    """Raised inside a worker process, from any lock wait, when its own shard
    needs repair: the current operation is dropped (nothing it did is published)
    and the worker repairs the shard at the top of its loop."""


def _closed(*_args) -> int:
    raise ClosedError("the database is closed")


class ProcLock:
    """A cross-process lock: a robust process-shared pthread mutex in the meta
    block. ``acquire``/``release`` or ``with``; waits at most ``timeout``
    seconds (LockTimeoutError). Not reentrant.

    ``slot``: ctypes ``c_char * LOCK_BYTES`` over the lock's slot (initialised
    by :func:`init_mutex`); ``words``: the meta block's lock slots as a u32
    memoryview; ``index``: the lock's number j (slot j). A shard lock gets
    ``wake`` (wakes its worker: it is the one that repairs); the meta and
    manifest locks get ``recover`` (run by whoever acquires after a holder died,
    before marking the mutex consistent). In a shard's worker process every lock
    gets ``stuck``, a function raising RepairNeeded when that worker's shard needs
    repair, called between two slices of a wait (None elsewhere: other processes
    simply wait, the worker repairs), and its own shard lock gets ``repairer``."""

    __slots__ = ("slot", "_try", "_unlock", "words", "_futex", "_flag", "timeout", "what",
                 "wake", "recover", "repairer", "stuck", "index", "hooked")

    def __init__(self, slot, words, index: int, timeout: float, what: str, wake=None,
                 recover=None, stuck=None, repairer: bool = False):
        self.slot = slot
        self._try = functools.partial(_trylock, slot)
        self._unlock = functools.partial(_unlock, slot)
        #: The lock slot's number; the compiled kernel locks the slot itself
        #: (trylock, then :meth:`_contended` as :meth:`acquire` does), unless
        #: ``hooked``: a test's failpoint wraps the fast path (then it calls
        #: acquire and release).
        self.index = index
        self.hooked = failpoints.is_armed("lock.acquired")
        if self.hooked:
            self._try = _hit_after(self._try)
        self.words = words
        self._futex = index * LOCK_WORDS + L_FUTEX
        self._flag = index * LOCK_WORDS + L_REPAIR
        self.timeout = timeout
        self.what = what
        self.wake = wake
        self.recover = recover
        #: True in the shard's worker process, for its own shard lock.
        self.repairer = repairer
        self.stuck = stuck

    # -- the hot path ---------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lock. Raises LockTimeoutError after ``timeout`` seconds (a live
        holder, or a repair not finished in time), RepairNeeded in the worker
        whose shard needs repair, ClosedError after :meth:`close`."""
        r = self._try()
        if r or self.words[self._flag]:
            self._contended(r)

    def release(self) -> None:
        """Release the lock; FuseDBError if this thread does not hold it."""
        if self._unlock():
            self._not_held()

    def __enter__(self) -> ProcLock:
        r = self._try()
        if r or self.words[self._flag]:
            self._contended(r)
        return self

    def __exit__(self, *exc) -> None:
        if self._unlock():
            self._not_held()

    # -- slow paths -----------------------------------------------------------------

    def _contended(self, r: int) -> None:
        deadline = None
        while True:
            if r == _EBUSY:
                if deadline is None:
                    deadline = time.monotonic() + self.timeout
                r = self._wait(deadline, True)
                if r in (0, _EOWNERDEAD):
                    failpoints.hit("lock.acquired")
            if r == _EOWNERDEAD:
                self._owner_died()
            elif r:
                self._failed(r)
            # Held. A shard whose previous holder died waits for its worker.
            if not self.words[self._flag]:
                return
            self._unlock()
            if self.repairer:
                raise RepairNeeded(f"{self.what}: the shard needs repair")
            if self.wake is not None:
                self.wake()
            if deadline is None:
                deadline = time.monotonic() + self.timeout
            self._wait_repaired(deadline)
            r = self._try()

    def _wait(self, deadline: float, hook: bool) -> int:
        """Block (GIL released) until the lock is taken or ``deadline`` (monotonic)
        passes. Returns 0 or EOWNERDEAD (held) or another error number."""
        if self.words[self._futex] & FUTEX_TID_MASK == threading.get_native_id():
            raise FuseDBError(f"{self.what} is already held by this thread (not reentrant)")
        ts = _Timespec()
        while True:
            if hook and self.stuck is not None:
                self.stuck()
            left = deadline - time.monotonic()
            if left <= 0:
                self._timed_out()
            end = _lock_clock() + min(left, _SLICE)
            ts.tv_sec = int(end)
            ts.tv_nsec = int((end - ts.tv_sec) * 1e9)
            r = _lock_until(self.slot, ts)
            if r != _ETIMEDOUT:
                return r

    def _wait_repaired(self, deadline: float) -> None:
        while self.words[self._flag]:
            if self.stuck is not None:
                self.stuck()
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"{self.what} not acquired within lock_timeout={self.timeout}s: a process "
                    f"died holding it and the shard's worker has not finished repairing the "
                    f"shard; nothing was applied")
            time.sleep(_REPAIR_POLL)

    def _owner_died(self) -> None:
        """This thread just got the lock with EOWNERDEAD: its holder died inside
        its critical section. Make it usable again (see the module docstring)."""
        words = self.words
        if self.recover is not None:
            self.recover()
        else:
            words[self._flag + 1] = 0        # the dead thread's id is gone by now
            words[self._flag] = 1            # before the mutex is usable again
        rc = _consistent(self.slot)
        if rc:
            self._failed(rc)
        log.warning("%s: its holder died inside its critical section; %s", self.what,
                    "recovered" if self.recover is not None
                    else "the shard's worker rebuilds the shard from the WAL")

    def _timed_out(self) -> None:
        raise LockTimeoutError(
            f"{self.what} not acquired within lock_timeout={self.timeout}s (held by pid "
            f"{self.holder()}); nothing was applied")

    def _failed(self, rc: int) -> None:
        if rc == errno.ENOTRECOVERABLE:
            raise FuseDBError(f"{self.what} is not recoverable (released after its holder "
                              f"died without being marked consistent); close and reopen")
        raise FuseDBError(f"{self.what}: pthread mutex error {errno.errorcode.get(rc, rc)}")

    def _not_held(self) -> None:
        raise FuseDBError(f"{self.what} released by a thread that does not hold it")

    # -- state, for the repairer, the supervisor and messages ----------------------------

    def holder(self) -> int:
        """pid of the process whose thread holds the lock (0: free). A thread id
        when that thread is gone."""
        tid = self.words[self._futex] & FUTEX_TID_MASK
        return _pid_of(tid) if tid else 0

    def held_here(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self.words[self._futex] & FUTEX_TID_MASK == threading.get_native_id()

    def owner_died(self) -> bool:
        """Whether a holder died and nobody has acquired the lock since."""
        return bool(self.words[self._futex] & FUTEX_OWNER_DIED)

    def needs_repair(self) -> bool:
        """Shard lock: whether the shard needs repair (its repair flag is set, or
        a holder died and nobody has acquired the lock since). Two memory reads."""
        w = self.words
        return bool(w[self._flag] or w[self._futex] & FUTEX_OWNER_DIED)

    def dead_holder(self) -> int:
        """The thread id of the holder whose death set the repair flag, if it is
        known (it is when the repairer is the first to acquire), else 0."""
        return self.words[self._flag + 1]

    def acquire_for_repair(self) -> bool:
        """The repairer (the shard's worker) takes the lock to repair the shard.
        True: held, and the shard needs repair (the caller repairs, then calls
        :meth:`repaired`); False: nothing to repair (not held). LockTimeoutError
        if a live process keeps it for ``timeout`` seconds."""
        words = self.words
        if words[self._futex] & FUTEX_OWNER_DIED:
            dead = words[self._futex + L_OWNER] & FUTEX_TID_MASK   # glibc's __owner
        else:
            dead = 0
        r = self._try()
        if r == _EBUSY:
            r = self._wait(time.monotonic() + self.timeout, False)
        if r == _EOWNERDEAD:
            self._owner_died()
            words[self._flag + 1] = dead
        elif r:
            self._failed(r)
        if words[self._flag]:
            return True
        self._unlock()
        return False

    def repaired(self) -> None:
        """The repairer has rebuilt the shard: clear the flag and release."""
        self.words[self._flag] = 0
        self.words[self._flag + 1] = 0
        self.release()

    def recover_if_dead(self) -> bool:
        """Meta and manifest locks (the router's supervisor): if a holder died and
        nobody acquired the lock since, acquire it (``recover`` runs), release it;
        never waits. Returns whether it recovered the lock."""
        if not self.words[self._futex] & FUTEX_OWNER_DIED:
            return False
        r = self._try()
        if r == _EOWNERDEAD:
            self._owner_died()
        elif r:
            return False       # taken meanwhile: that locker recovers it
        self.release()
        return r == _EOWNERDEAD

    def close(self) -> None:
        """Drop this process's reference to the shared memory (before the meta
        block is unmapped); any later use raises ClosedError."""
        self._try = self._unlock = _closed
        self.slot = None


def _hit_after(trylock):
    """Test only (failpoint ``lock.acquired`` armed when the lock is built): hit
    the failpoint right after every acquisition by the fast path."""
    def hit_after() -> int:
        r = trylock()
        if r in (0, _EOWNERDEAD):
            failpoints.hit("lock.acquired")
        return r
    return hit_after


class SemEvent:
    """``threading.Event``'s wait/set/clear over a named semaphore, so one process
    can wake a thread of another (a worker, a WAL writer)."""

    __slots__ = ("sem",)

    def __init__(self, sem: posix_ipc.Semaphore):
        self.sem = sem

    def set(self) -> None:
        if self.sem.value < 64:     # enough to wake; keep the count bounded
            self.sem.release()

    def wait(self, timeout: float | None = None) -> bool:
        try:
            self.sem.acquire(timeout)
        except (posix_ipc.BusyError, posix_ipc.SignalError):
            return False     # timed out, or a signal handler ran: a spurious wake-up
        return True

    def clear(self) -> None:
        try:
            while True:
                self.sem.acquire(0)
        except posix_ipc.BusyError:
            pass

    def is_set(self) -> bool:
        return self.sem.value > 0


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (if we may not look at
    it, it counts as alive)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.AccessDenied:
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False
