"""Named POSIX shared-memory regions and semaphores of one database.

Every object a database creates is named ``/fusedb-<tag>-<what>`` where ``tag``
is derived from the database directory's real path, so the next ``open`` of the
same directory can find and remove objects a crashed run left behind
(invariant 5). In ``/dev/shm`` they appear as ``fusedb-<tag>-*`` (regions) and
``sem.fusedb-<tag>-*`` (semaphores).
"""

from __future__ import annotations

import contextlib
import mmap
import os

import posix_ipc
import xxhash

from fusedb.core import failpoints
from fusedb.core.fileio import SHARED_FILE_MODE
from fusedb.errors import SharedMemoryError

PREFIX = "fusedb-"
SHM_DIR = "/dev/shm"


def tag_for(path: str) -> str:
    return xxhash.xxh64_hexdigest(os.fsencode(os.path.realpath(path)))[:12]


def name(tag: str, what: str) -> str:
    return f"/{PREFIX}{tag}-{what}"


def leftovers(tag: str) -> list[str]:
    """Names (``/fusedb-...``) of every shared-memory object carrying ``tag``."""
    found = []
    mark = f"{PREFIX}{tag}-"
    for entry in os.listdir(SHM_DIR):
        base = entry[4:] if entry.startswith("sem.") else entry
        if base.startswith(mark):
            found.append(("sem", "/" + base) if entry.startswith("sem.") else ("shm", "/" + base))
    return found


def remove_leftovers(tag: str) -> int:
    """Unlink every object carrying ``tag``; return how many there were."""
    items = leftovers(tag)
    for kind, nm in items:
        try:
            if kind == "sem":
                posix_ipc.unlink_semaphore(nm)
            else:
                posix_ipc.unlink_shared_memory(nm)
        except posix_ipc.ExistentialError:
            pass  # removed concurrently: the goal is reached either way
    return len(items)


def path_of(kind: str, nm: str) -> str:
    """The file in SHM_DIR of object ``nm`` (``kind`` "shm" or "sem", as
    :func:`leftovers` gives them): Linux (glibc) keeps both there, a semaphore
    as ``sem.<name>``."""
    return os.path.join(SHM_DIR, ("sem." if kind == "sem" else "") + nm[1:])


def share(names: list[tuple[str, str]], gid: int) -> None:
    """Give the objects ``names`` ((kind, name) pairs) group ``gid`` and mode
    0660 (fusedb.core.fileio.SHARED_FILE_MODE), so that processes of that group
    can attach. posix_ipc creates them 0600 (as cut by the umask); this sets
    the mode whatever the umask. Raises OSError (PermissionError if this user
    is not in the group)."""
    for kind, nm in names:
        p = path_of(kind, nm)
        os.chown(p, -1, gid)
        os.chmod(p, SHARED_FILE_MODE)


def free_bytes() -> int:
    """Bytes free in ``/dev/shm`` now (``statvfs``: blocks available x block size)."""
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize


def _no_room(what: str, size: int, e: OSError) -> SharedMemoryError:
    return SharedMemoryError(
        f"cannot reserve {size:,} bytes in {SHM_DIR} for {what}: {e.strerror} "
        f"({free_bytes():,} bytes free in {SHM_DIR})")


def create_semaphore(nm: str, value: int) -> posix_ipc.Semaphore:
    """Create the named semaphore ``nm`` (which must not exist) with ``value``.
    A semaphore is a small file in ``/dev/shm``: raises SharedMemoryError when
    ``/dev/shm`` has no room (or no inode) for it."""
    try:
        failpoints.hit("shm.create")
        return posix_ipc.Semaphore(nm, posix_ipc.O_CREX, initial_value=value)
    except OSError as e:
        raise _no_room(f"semaphore {nm}", mmap.PAGESIZE, e) from e


class Region:
    """A mapped shared-memory object. ``buf`` is a writable memoryview of it.

    ``Region(nm, size)`` creates the object (it must not exist) with ``size``
    bytes, all of them reserved in ``/dev/shm``; it raises SharedMemoryError,
    leaving no object behind, when ``/dev/shm`` cannot hold them.
    ``Region(nm)`` attaches to an existing object (posix_ipc.ExistentialError if
    there is none).

    Made by the Meta, Arena and Ring constructors on the thread that opens
    (embedded or router process: creates) or attaches (workers, clients), one
    per object per process; unmapped when the database closes (Runtime.unmap).
    The Region takes no lock: what is written through ``buf`` follows the rules
    of the structure it holds (docs/design.md, "Who touches what under which
    lock")."""

    def __init__(self, nm: str, size: int | None = None):
        self.name = nm
        if size is not None:
            try:
                shm = posix_ipc.SharedMemory(nm, posix_ipc.O_CREX, size=size)
            except OSError as e:      # ENOSPC: no inode left; EMFILE, ENFILE
                raise _no_room(nm, size, e) from e
            try:
                failpoints.hit("shm.create")
                os.posix_fallocate(shm.fd, 0, size)
            except OSError as e:
                shm.close_fd()
                shm.unlink()
                raise _no_room(nm, size, e) from e
        else:
            shm = posix_ipc.SharedMemory(nm)
        try:
            self.size = shm.size
            self._mm = mmap.mmap(shm.fd, shm.size)
        except BaseException:
            if size is not None:    # never leave a half-made object in /dev/shm
                with contextlib.suppress(posix_ipc.ExistentialError):
                    posix_ipc.unlink_shared_memory(nm)
            raise
        finally:
            shm.close_fd()
        self.buf = memoryview(self._mm)

    def close(self) -> None:
        """Unmap (at once, or when the last view of it goes). Called after the name
        is no longer needed; the name itself is unlinked separately."""
        try:
            self.buf.release()
            self._mm.close()
        except BufferError:
            # A view is still alive (e.g. an unfinished scan's snapshot): the
            # mapping is freed by the garbage collector when it goes.
            pass

    def unlink(self) -> None:
        posix_ipc.unlink_shared_memory(self.name)
