"""The ctypes binding of the process-shared robust pthread mutex in a meta block
lock slot (docs/format.md, "Lock slots"; offsets: fusedb.core.layout). The
locking protocol built on it (waiting, owner death, repair) is fusedb.shm.locks.

Calls that may block release the GIL (CDLL); the others keep it (PyDLL), which
saves the GIL hand-off (measured: trylock + unlock 0.36 us through PyDLL, 0.6-1 us
through CDLL). The GIL-keeping ones (:data:`trylock`, :data:`unlock`,
:data:`consistent`) get no argtypes (the conversion costs more than the call)
and are only ever called with ctypes arrays, which ctypes passes as pointers: a
plain int argument would be passed as a 32-bit C int.
"""

from __future__ import annotations

import ctypes
import errno
import time

from fusedb.core.layout import LOCK_BYTES, MUTEX_BYTES
from fusedb.errors import FuseDBError

# The futex word's bits (linux/futex.h).
FUTEX_WAITERS = 0x80000000
FUTEX_OWNER_DIED = 0x40000000
FUTEX_TID_MASK = 0x3FFFFFFF

_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1


class Timespec(ctypes.Structure):
    """struct timespec (``tv_sec``, ``tv_nsec``: a deadline on :data:`lock_clock`),
    for :func:`lock_until`. Made by ProcLock._wait (fusedb.shm.locks), one per
    wait, on the thread waiting for a contended lock; no lock: local to it."""
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc_gil = ctypes.PyDLL(None)


def _fn(lib, name: str, argtypes):
    f = getattr(lib, name, None)
    if f is None:
        return None
    f.argtypes = argtypes
    f.restype = ctypes.c_int
    return f


_P = ctypes.c_void_p
_attr_init = _fn(_libc, "pthread_mutexattr_init", [_P])
_attr_setpshared = _fn(_libc, "pthread_mutexattr_setpshared", [_P, ctypes.c_int])
_attr_setrobust = _fn(_libc, "pthread_mutexattr_setrobust", [_P, ctypes.c_int])
_attr_destroy = _fn(_libc, "pthread_mutexattr_destroy", [_P])
_mutex_init = _fn(_libc, "pthread_mutex_init", [_P, _P])
#: pthread_mutex_trylock(slot) -> 0 | EBUSY | EOWNERDEAD | ...; keeps the GIL.
trylock = _libc_gil.pthread_mutex_trylock
#: pthread_mutex_unlock(slot) -> 0 | EPERM (not held by this thread); keeps the GIL.
unlock = _libc_gil.pthread_mutex_unlock
#: pthread_mutex_consistent(slot) -> 0 | error; None if the C library lacks it.
consistent = getattr(_libc_gil, "pthread_mutex_consistent", None)
for _f in (trylock, unlock) + ((consistent,) if consistent is not None else ()):
    _f.restype = ctypes.c_int
_clocklock = _fn(_libc, "pthread_mutex_clocklock", [_P, ctypes.c_int, ctypes.POINTER(Timespec)])
if _clocklock is not None:
    #: The clock :func:`lock_until`'s deadlines are on.
    lock_clock = time.monotonic

    def lock_until(slot, ts) -> int:
        """Block (GIL released) until the mutex is taken or the deadline ``ts``
        (a Timespec on :data:`lock_clock`) passes: 0 | EOWNERDEAD | ETIMEDOUT | ..."""
        return _clocklock(slot, time.CLOCK_MONOTONIC, ts)
else:
    # glibc < 2.30: absolute deadlines on CLOCK_REALTIME; a clock step lengthens or
    # shortens one slice at most, the overall timeout is kept on the monotonic clock.
    _timedlock = _fn(_libc, "pthread_mutex_timedlock", [_P, ctypes.POINTER(Timespec)])
    lock_clock = time.time

    def lock_until(slot, ts) -> int:
        """Block (GIL released) until the mutex is taken or the deadline ``ts``
        (a Timespec on :data:`lock_clock`) passes: 0 | EOWNERDEAD | ETIMEDOUT | ..."""
        return _timedlock(slot, ts)

_mutex_size: int | None = None


def mutex_size() -> int:
    """sizeof(pthread_mutex_t) in bytes, measured: pthread_mutex_init clears the
    whole object (glibc and musl both do) in a buffer filled with 0xFF first.
    Raises FuseDBError if this C library lacks robust process-shared mutexes or
    its mutex does not fit in MUTEX_BYTES."""
    global _mutex_size
    if _mutex_size is None:
        if None in (_attr_setrobust, consistent, _mutex_init):
            raise FuseDBError("multiprocess mode needs process-shared robust mutexes "
                              "(pthread_mutexattr_setrobust), which this C library lacks")
        buf = (ctypes.c_char * LOCK_BYTES)()
        ctypes.memset(buf, 0xFF, LOCK_BYTES)
        _init(buf)
        raw = bytes(buf)
        _mutex_size = max(i for i in range(LOCK_BYTES) if raw[i] != 0xFF) + 1
        if _mutex_size > MUTEX_BYTES:
            raise FuseDBError(f"pthread_mutex_t is {_mutex_size} bytes here; a lock slot "
                              f"reserves {MUTEX_BYTES}")
    return _mutex_size


def _init(slot) -> None:
    attr = (ctypes.c_char * 64)()    # pthread_mutexattr_t is 4 bytes on Linux
    for rc in (_attr_init(attr), _attr_setpshared(attr, _PTHREAD_PROCESS_SHARED),
               _attr_setrobust(attr, _PTHREAD_MUTEX_ROBUST), _mutex_init(slot, attr)):
        if rc:
            raise FuseDBError(f"initialising a process-shared robust mutex failed: "
                              f"{errno.errorcode.get(rc, rc)}")
    _attr_destroy(attr)


def init_mutex(slot) -> None:
    """Initialise the lock slot ``slot`` (a ctypes ``c_char * LOCK_BYTES`` over
    fresh, zeroed shared memory, 8-byte aligned) as a free robust process-shared
    mutex. Done once, by the process that creates the meta block, before any
    other process can see it; never on a slot in use."""
    mutex_size()
    if ctypes.addressof(slot) % 8:
        raise FuseDBError("a lock slot is not 8-byte aligned")
    _init(slot)


def pid_of(tid: int) -> int:
    """The process (thread group) of thread ``tid``, or ``tid`` itself if it is
    gone (a process's main thread has tid == pid)."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return tid
