"""Locks of one database, and how a lock whose holder died is found.

Embedded mode uses ``threading.Lock`` (one process; a posix semaphore would hand
the GIL to the busy worker thread on every acquire). Multiprocess mode uses
:class:`ProcLock`: a named POSIX semaphore plus a *holder slot* in the meta
block (``locks``: holder token, acquisitions). The holder writes its token (pid
and process start time) right after acquiring and clears it right before
releasing, so a lock still taken whose slot names a process that no longer
exists (or a zombie, or a new process that reused the pid) was left by that
process.

Acquiring waits at most ``timeout`` seconds, then raises LockTimeoutError:
no process hangs on a dead holder. Repair is done by one designated process
per lock (never two at once): the shard's worker for its shard lock
(fusedb.store.Store.repair_shard), the router for the meta and manifest locks
(whose critical sections leave nothing half-done: see fusedb.shm.meta).

A lock is only ever taken over from a holder known to be dead: a live holder
can stall for any time (a long C call holding its GIL, SIGSTOP, swapping). A
process killed in the few bytecodes between taking the semaphore and writing
its slot (or between clearing it and posting) leaves the lock taken with an
empty slot; that is never taken over, so waiters get LockTimeoutError and the
database must be closed and reopened (recovery replays the WAL).
"""

from __future__ import annotations

import os
import time

import posix_ipc
import psutil

from .. import failpoints
from ..errors import FuseDBError, LockTimeoutError

_PID_MASK = 0xFFFFFFFF


def _start_ticks(p: psutil.Process) -> int:
    return int(p.create_time() * 100) & _PID_MASK


def token_of(pid: int) -> int:
    """The holder token of process ``pid``: pid | start time (1/100 s) << 32."""
    return pid | _start_ticks(psutil.Process(pid)) << 32


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (if we may not look at
    it, it counts as alive: never take over from a process we cannot see)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.AccessDenied:
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False


def token_alive(token: int) -> bool:
    """Whether the process of a holder token is still the same live process."""
    try:
        p = psutil.Process(token & _PID_MASK)
        return p.status() != psutil.STATUS_ZOMBIE and _start_ticks(p) == token >> 32
    except psutil.AccessDenied:
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False


class RepairNeeded(Exception):
    """Raised inside a worker process, from any lock wait, when its own shard lock
    was abandoned: the current operation is dropped (nothing it did is published)
    and the worker repairs the shard at the top of its loop."""


#: A worker process sets this to a function that raises RepairNeeded when its
#: shard needs repair; every ProcLock wait of that process calls it. None in
#: other processes, which simply wait (the worker repairs meanwhile).
stuck_hook = None

#: Length of one wait when a stuck_hook is set.
_SLICE = 0.02


class ProcLock:
    """A cross-process lock. ``slots`` is the meta block's ``locks`` view."""

    __slots__ = ("sem", "slots", "i", "timeout", "token", "what")

    def __init__(self, sem: posix_ipc.Semaphore, slots, index: int, timeout: float, what: str):
        if failpoints.is_armed("lock.acquired"):
            sem = _HitAfterAcquire(sem)
        self.sem = sem
        self.slots = slots
        self.i = 2 * index
        self.timeout = timeout
        self.token = token_of(os.getpid())
        self.what = what

    def acquire(self) -> None:
        try:
            self.sem.acquire(self.timeout if stuck_hook is None else _SLICE)
        except posix_ipc.BusyError:
            if stuck_hook is None:
                self._timed_out()       # waited the whole timeout
            self._acquire_slowly(self.timeout - _SLICE)
        except posix_ipc.SignalError:
            # A signal handler ran (EINTR); posix_ipc does not retry by itself.
            self._acquire_slowly(self.timeout)
        i = self.i
        self.slots[i] = self.token
        self.slots[i + 1] += 1

    def _timed_out(self) -> None:
        raise LockTimeoutError(
            f"{self.what} not acquired within lock_timeout={self.timeout}s (held by pid "
            f"{self.holder()}); nothing was applied")

    def _acquire_slowly(self, budget: float) -> None:
        deadline = time.monotonic() + budget
        while True:
            if stuck_hook is not None:
                stuck_hook()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timed_out()
            try:
                self.sem.acquire(min(remaining, _SLICE) if stuck_hook is not None
                                 else remaining)
                return
            except (posix_ipc.BusyError, posix_ipc.SignalError):
                continue

    def release(self) -> None:
        i = self.i
        if self.slots[i] != self.token:
            # Taken over by a repair that judged this process dead: posting now
            # would let two holders in. The repair has released it already.
            raise FuseDBError(f"{self.what} was taken over while this process held it "
                              f"(judged dead); the operation may not have been applied")
        self.slots[i] = 0
        self.sem.release()

    def __enter__(self) -> "ProcLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def holder(self) -> int:
        """pid of the holder (0: none recorded)."""
        return self.slots[self.i] & _PID_MASK

    def abandoned(self) -> bool:
        """Whether the lock is held by a process that is gone (its slot's token
        names no live process with that start time). Only the lock's designated
        repairer calls this, then :meth:`take_over`."""
        if self.sem.value > 0:
            return False
        tok = self.slots[self.i]
        return tok != 0 and tok != self.token and not token_alive(tok)

    def take_over(self) -> None:
        """Become the holder of an abandoned lock (its semaphore stays taken)."""
        self.slots[self.i] = self.token
        self.slots[self.i + 1] += 1


class _HitAfterAcquire:
    """Test only: the semaphore, with failpoint ``lock.acquired`` hit right after
    every acquisition."""

    def __init__(self, sem):
        self._sem = sem

    def acquire(self, timeout=None):
        self._sem.acquire(timeout)
        failpoints.hit("lock.acquired")

    def release(self):
        self._sem.release()

    @property
    def value(self):
        return self._sem.value


class SemEvent:
    """``threading.Event``'s wait/set/clear over a named semaphore, so one process
    can wake a thread of another (a worker, a flusher)."""

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
