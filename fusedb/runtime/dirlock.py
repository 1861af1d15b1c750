"""The directory's LOCK file: one owning process (embedded, or a multiprocess
database's router) per database directory."""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import stat
import time

import posix_ipc

from fusedb.core.fileio import SHARED_DIR_MODE, SHARED_FILE_MODE, create
from fusedb.errors import LockedError, NotADatabaseError, PermissionDeniedError
from fusedb.runtime import hooks, identity
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

    Raises LockedError if another process, or this one, holds it (the message
    says which), PermissionDeniedError if LOCK cannot be created or opened for
    writing, OSError on another error."""

    def __init__(self, path: str, tag: str, timeout: float):
        self.path = path
        try:
            self.fd = create(os.path.join(path, LOCK_FILE), os.O_RDWR)
        except PermissionError as e:
            raise permission_denied(path, e, "write (rwx) permission on") from None
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
                raise locked(path) from None

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


def locked(path: str) -> LockedError:
    """The LockedError of an open that found ``path``/LOCK held: by this process
    (a second open here), or by the processes /proc/locks names."""
    holders = lock_holders(path) or []
    if os.getpid() in holders:
        role = hooks.owned_here(path)
        how = "" if role is None else (
            f" ({role.opts.mode}, {role.opts.shards} shard(s), by {type(role).__name__})")
        more = ("" if role is not None and not role.multiprocess else
                ", or attach another handle with fusedb.connect(path) (multiprocess only)")
        return LockedError(f"database {path} is already open in this process{how}: use the "
                           f"handle that opened it (a FuseDB handle is thread-safe){more}, "
                           f"or close() it before opening again")
    who = f" (pid {', '.join(map(str, holders))})" if holders else ""
    return LockedError(f"database {path} is open in another process{who}; attach to it "
                       f"with fusedb.connect(path) if it runs multiprocess (fusedb serve, "
                       f"or open(path, shards=N)), or stop that process first")


def lock_holders(path: str) -> list[int] | None:
    """pids holding ``path``/LOCK (the flock an open database keeps), read from
    /proc/locks without taking the lock (so a probe never makes an ``open``
    fail); [] if none holds it (or there is no LOCK), None if it cannot be told
    (/proc/locks or the directory unreadable). The pid is the process that took
    the lock: a router that died may show while its workers still hold it."""
    try:
        st = os.stat(os.path.join(path, LOCK_FILE))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    pids = []
    for line in lines:
        parts = line.split()
        if "->" in parts:        # a waiter, not a holder
            continue
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
            pids.append(int(parts[4]))
    return pids


def permission_denied(path: str, e: PermissionError, need: str) -> PermissionDeniedError:
    """The PermissionDeniedError of ``e`` (met opening the database at ``path``):
    who this process is, who owns the path refused, and ``need`` (the
    permission wanted, e.g. "write (rwx) permission on")."""
    where = e.filename or path
    owner = ""
    for p in (where, os.path.dirname(where)):      # the file, or the directory refusing it
        try:
            st = os.stat(p)
        except OSError:
            continue
        owner = f" ({p} is owned by {user_name(st.st_uid)}, group {group_name(st.st_gid)}, " \
                f"mode {stat.S_IMODE(st.st_mode):04o})"
        break
    return PermissionDeniedError(
        f"cannot open the database at {path}: permission denied on {where}{owner}; this "
        f"process runs as {user_name(os.geteuid())} and needs {need} the database "
        f"directory (and search (x) permission on its parents; to create it, write "
        f"permission on its parent): run as the directory's owner, or have the owner "
        f"share it with a group of yours (fusedb.open(path, group=...))")


def user_name(uid: int) -> str:
    """``name (uid N)``, or ``uid N`` for a uid without a passwd entry."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def group_name(gid: int) -> str:
    """``name (gid N)``, or ``gid N`` for a gid without a group entry."""
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def share(path: str, gid: int) -> None:
    """Share the database directory ``path`` (LOCK held) with group ``gid``: the
    directory gets that group and SHARED_DIR_MODE (setgid: files created in it
    get its group), each file in it that group and SHARED_FILE_MODE. Raises
    PermissionDeniedError if this user may not (only the owner, if a member of
    the group, or root may)."""
    try:
        os.chown(path, -1, gid)
        os.chmod(path, SHARED_DIR_MODE)
        for entry in os.scandir(path):
            if entry.is_file(follow_symlinks=False):
                os.chown(entry.path, -1, gid)
                os.chmod(entry.path, SHARED_FILE_MODE)
    except PermissionError as e:
        raise PermissionDeniedError(
            f"cannot share the database at {path} with group {group_name(gid)}: "
            f"permission denied on {e.filename or path}; only the owner of the directory "
            f"and its files ({user_name(os.stat(path).st_uid)}), if a member of that group, "
            f"or root may; this process runs as {user_name(os.geteuid())} in groups "
            f"{', '.join(group_name(g) for g in sorted(set(os.getgroups()) | {os.getegid()}))}"
        ) from None


def _orphaned_workers(tag: str) -> bool:
    """Whether LOCK is held only by worker processes of a router that died.
    False while a meta block is being created (an open in progress), or when
    it is not ours to read."""
    try:
        meta = Meta(region.name(tag, "meta"))
    except (posix_ipc.Error, RuntimeError, ValueError):
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
        if lock_holders(path):
            raise locked(path) from None
        raise
