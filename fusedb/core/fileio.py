"""Durable file publication: write temp -> fsync -> rename -> fsync directory.

Every immutable file FuseDB publishes (segments, manifests) goes through
:func:`publish`, so the rule of invariant 4 lives in one place.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from fusedb.core import failpoints

#: The mode every file of a database is created with: readable and writable by
#: its owner only (the data, the WAL, the lock file, serve.log); the directory
#: that ``open`` creates gets DIR_MODE. Shared memory objects are 0600 too
#: (posix_ipc's default). Other users attach through a server (fusedb serve),
#: or as members of the group the database is shared with (``open(...,
#: group=...)``): its directory is then SHARED_DIR_MODE (setgid: new files get
#: its group) and its files and shared memory SHARED_FILE_MODE.
FILE_MODE = 0o600
DIR_MODE = 0o700
SHARED_FILE_MODE = 0o660
SHARED_DIR_MODE = 0o2770


def shared_group(dirpath: str) -> int | None:
    """The gid directory ``dirpath`` is shared with (its mode has the setgid bit
    and group rwx, as SHARED_DIR_MODE), else None. Raises OSError."""
    st = os.stat(dirpath)
    return st.st_gid if st.st_mode & SHARED_DIR_MODE == SHARED_DIR_MODE else None


def create(path: str, flags: int) -> int:
    """``os.open(path, flags | O_CREAT)`` with a database file's mode: FILE_MODE,
    or SHARED_FILE_MODE when its directory is shared with a group (set with
    fchmod, so the umask cannot cut it; the group comes from the setgid
    directory). Returns the descriptor; raises OSError."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        if shared_group(os.path.dirname(path) or ".") is not None and \
                os.fstat(fd).st_mode & 0o777 != SHARED_FILE_MODE:
            os.fchmod(fd, SHARED_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_if_exists(path: str) -> bytes | None:
    """The whole content of the file at ``path``, or None if there is none.
    Other OSErrors (EACCES, EIO) are raised."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_all(fd: int, data: bytes | memoryview, write=None) -> int:
    """Write all of ``data`` (any C-contiguous buffer) at ``fd``'s offset,
    looping over short writes; returns the byte count. Raises OSError. Holds no
    view of ``data`` after returning (a ring's mapping can be closed).
    ``write``: the ``os.write`` to call, default this module's; callers in other
    modules pass their own, so a test that replaces a module's ``os`` (disk
    faults, power loss) reaches the writes that module makes."""
    write = write or os.write
    with memoryview(data) as mv, mv.cast("B") as view:
        done = 0
        while done < len(view):
            with view[done:] as rest:
                done += write(fd, rest)
    return done


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(path: str, chunks: Iterable[bytes | memoryview], sync_dir: bool = True,
            point: str | None = None) -> int:
    """Write ``chunks`` to ``path`` atomically and durably; return the byte count.

    The data goes to ``path + ".tmp"``, is fsynced, renamed over ``path``, and the
    directory is fsynced, so after a crash ``path`` is either absent or complete.
    If any step up to the rename fails, the temporary file is removed and the
    error raised; ``path`` is then untouched.
    ``sync_dir=False`` leaves the directory fsync to the caller: segment files,
    whose names become durable with the directory fsync that precedes every
    manifest write (fusedb.core.manifest.write), the only thing that ever names them.
    ``point`` names a failpoint hit once the first chunk is in the temporary
    file (tests inject ENOSPC or EIO there: a half-written file).
    """
    size = stage(path, chunks, point)
    commit(path)
    if sync_dir:
        failpoints.hit("publish.before_dir_fsync")
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    return size


def stage(path: str, chunks: Iterable[bytes | memoryview], point: str | None = None) -> int:
    """The first half of :func:`publish`: write ``chunks`` to ``path + ".tmp"`` and
    fsync it; returns the byte count. On any failure the temporary file is
    removed and the error raised. :func:`commit` (or :func:`discard`) follows."""
    tmp = path + ".tmp"
    size = 0
    try:
        fd = create(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            for chunk in chunks:
                size += write_all(fd, chunk)
                if point is not None:
                    failpoints.hit(point)
                    point = None
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        # A failed attempt (ENOSPC, EIO...) leaves no half-written file behind: a
        # full disk needs the space back, and the caller may retry.
        discard(path)
        raise
    return size


def commit(path: str) -> None:
    """The second half of :func:`publish`: rename the staged ``path + ".tmp"`` over
    ``path`` (one metadata operation: callers may hold a lock around it). The
    directory is not fsynced: the caller does that after. On failure the
    temporary file is removed and the error raised."""
    try:
        failpoints.hit("publish.before_rename")
        os.rename(path + ".tmp", path)
    except BaseException:
        discard(path)
        raise


def discard(path: str) -> None:
    """Remove a staged ``path + ".tmp"`` that will not be committed (best effort)."""
    with contextlib.suppress(OSError):
        os.unlink(path + ".tmp")
