"""The directory's LOCK file: one owning process (embedded, or a multiprocess
database's router) per database directory."""

from __future__ import annotations

import fcntl
import os
import time

import posix_ipc

from fusedb.core.fileio import FILE_MODE
from fusedb.errors import LockedError, NotADatabaseError
from fusedb.runtime import identity
from fusedb.shm import region
from fusedb.shm.locks import alive
from fusedb.shm.meta import M_MODE, M_ROUTER_PID, MODE_MULTIPROCESS, Meta

LOCK_FILE = identity.LOCK_FILE


class DirLock:
    """flock on ``<path>/LOCK``, taken by the owning role's constructor
    (fusedb.runtime.embedded, fusedb.router) on the opening thread, before
    recovery; released by its close (any thread, the one closing). The router's
    worker processes inherit the locked descriptor (:attr:`fd`), so a database
    whose router died stays locked until its last worker has written its WAL
    ring out and exited; the constructor waits for that (up to ``timeout``
    seconds) rather than recover under a worker still writing.

    Raises LockedError if another process holds it, OSError if LOCK cannot be
    created."""

    def __init__(self, path: str, tag: str, timeout: float):
        self.path = path
        self.fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, FILE_MODE)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if _orphaned_workers(tag) and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                os.close(self.fd)
                self.fd = -1
                raise LockedError(f"database {path} is open in another process; attach "
                                  f"to it with fusedb.connect(path) if it runs multiprocess") \
                    from None

    def release(self, attempt=None) -> None:
        """Unlock and close (once). ``attempt``: a fusedb.runtime.state.Attempts
        collecting the errors of a teardown (else they are raised here)."""
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        if attempt is None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        else:
            attempt(fcntl.flock, fd, fcntl.LOCK_UN)
            attempt(os.close, fd)

    def drop_inherited(self) -> None:
        """In a fork()ed child: close this process's copy of the descriptor
        without unlocking (flock is shared by inherited descriptors: the lock
        is the parent's)."""
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


def _orphaned_workers(tag: str) -> bool:
    """Whether LOCK is held only by worker processes of a router that died."""
    try:
        meta = Meta(region.name(tag, "meta"))
    except (posix_ipc.ExistentialError, RuntimeError):
        return False
    try:
        return meta.hdr[M_MODE] == MODE_MULTIPROCESS and not alive(meta.hdr[M_ROUTER_PID])
    finally:
        meta.close()


def check_directory(path: str) -> str:
    """identity.check_directory (its result), except that a directory whose LOCK
    another process holds is that process's database, perhaps still being
    created (its files half-written look foreign): LockedError then, not
    NotADatabaseError. Takes no lock (a shared flock probe for an instant)."""
    try:
        return identity.check_directory(path)
    except NotADatabaseError:
        if _held(path):
            raise LockedError(f"database {path} is open (or being created) in another "
                              f"process") from None
        raise


def _held(path: str) -> bool:
    """Whether another process holds ``path``/LOCK (False if there is none)."""
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)        # closing drops the probe's lock, if it got one
