"""Locks of one database, and how a lock whose holder died is found.

Embedded mode uses ``threading.Lock`` (one process; a posix semaphore would hand
the GIL to the busy worker thread on every acquire). Multiprocess mode uses
:class:`ProcLock`: a named POSIX semaphore plus a *holder slot* in the meta
block (``locks``: holder pid, acquisitions). The holder writes its pid right
after acquiring and clears it right before releasing, so a lock still taken
whose slot names a dead process was left by that process.

Acquiring waits at most ``timeout`` seconds, then raises LockTimeoutError:
no process hangs on a dead holder. Repair is done by one designated process
per lock (never two at once): the shard's worker for its shard lock
(fusedb.store.Store.repair_shard), the router for the meta and manifest locks
(whose critical sections leave nothing half-done: see fusedb.shm.meta).
"""

from __future__ import annotations

import os
import time

import posix_ipc
import psutil

from ..errors import LockTimeoutError

#: How long a taken lock with an empty holder slot may stay so before it is
#: treated as abandoned: a process killed between acquiring the semaphore and
#: writing its pid (or between clearing it and releasing) leaves that state.
ORPHAN_SECONDS = 1.0


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False if pid else True


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

    __slots__ = ("sem", "slots", "i", "timeout", "pid", "what", "_seen")

    def __init__(self, sem: posix_ipc.Semaphore, slots, index: int, timeout: float, what: str):
        self.sem = sem
        self.slots = slots
        self.i = 2 * index
        self.timeout = timeout
        self.pid = os.getpid()
        self.what = what
        self._seen = None   # (acquisitions, first time seen) for orphan detection

    def acquire(self) -> None:
        try:
            self.sem.acquire(self.timeout if stuck_hook is None else _SLICE)
        except (posix_ipc.BusyError, posix_ipc.SignalError):
            # SignalError: a signal handler ran (EINTR); posix_ipc does not retry.
            self._acquire_slowly()
        i = self.i
        self.slots[i] = self.pid
        self.slots[i + 1] += 1

    def _acquire_slowly(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            if stuck_hook is not None:
                stuck_hook()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeoutError(
                    f"{self.what} not acquired within lock_timeout={self.timeout}s (held by "
                    f"pid {self.slots[self.i]}); nothing was applied")
            try:
                self.sem.acquire(min(remaining, _SLICE) if stuck_hook is not None
                                 else remaining)
                return
            except (posix_ipc.BusyError, posix_ipc.SignalError):
                continue

    def release(self) -> None:
        self.slots[self.i] = 0
        self.sem.release()

    def __enter__(self) -> "ProcLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def holder(self) -> int:
        return self.slots[self.i]

    def abandoned(self) -> bool:
        """Whether the lock is held by no live process: its holder slot names a dead
        one, or it has been taken with an empty slot for ORPHAN_SECONDS. Only the
        lock's designated repairer calls this, then :meth:`take_over`."""
        if self.sem.value > 0:
            self._seen = None
            return False
        pid = self.slots[self.i]
        if pid:
            self._seen = None
            return pid != self.pid and not alive(pid)
        mark = self.slots[self.i + 1]
        now = time.monotonic()
        if self._seen is None or self._seen[0] != mark:
            self._seen = (mark, now)
            return False
        return now - self._seen[1] >= ORPHAN_SECONDS

    def take_over(self) -> None:
        """Become the holder of an abandoned lock (its semaphore stays taken)."""
        self._seen = None
        self.slots[self.i] = self.pid
        self.slots[self.i + 1] += 1


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
