"""FuseDB's one error hierarchy.

Every error FuseDB raises on purpose is a :class:`FuseDBError`. Where a Python
user would expect a builtin (``TypeError`` for a wrong type, ``ValueError`` for
a bad value, ``KeyError`` from the mapping protocol) the class also inherits
from that builtin, so ``except TypeError`` keeps working.

All classes pickle cleanly (they take the message as their only argument).
"""

from __future__ import annotations


class FuseDBError(Exception):
    """Base class of every error FuseDB raises deliberately."""


class ClosedError(FuseDBError):
    """Raised by any call on a database handle (or a batch) after ``close()``."""


class KeyTypeError(FuseDBError, TypeError):
    """Raised when a key is neither bytes-like (any buffer: bytes, bytearray,
    memoryview, a numpy array, ...; not a buffer of Python objects) nor a ``str``."""


class ValueTypeError(FuseDBError, TypeError):
    """Raised when a value is not bytes-like (any buffer; not a ``str``, not a buffer of
    Python objects), or an ``incr`` delta / TTL has the wrong type."""


class KeyTooLargeError(FuseDBError, ValueError):
    """Raised when a key is empty or longer than ``max_key_size``."""


class ValueTooLargeError(FuseDBError, ValueError):
    """Raised when a value is longer than ``max_value_size``."""


class InvalidArgumentError(FuseDBError, ValueError):
    """Raised for a bad argument: a non-positive TTL, bad scan bounds, bad ``open`` options."""


class NotAnIntegerError(FuseDBError, ValueError):
    """Raised by ``incr`` when the stored value is not an ASCII decimal signed 64-bit integer."""


class IntegerOverflowError(FuseDBError, OverflowError):
    """Raised by ``incr`` when the result (or the delta) does not fit a signed 64-bit integer."""


class WriteStallError(FuseDBError):
    """Raised when a write waited ``write_timeout`` seconds for buffer memory, or for
    WAL ring space held back by the WAL limit, and got none.

    Buffer memory (the shard arena) is fixed in size; when every slab is in use the
    writer waits for the merge worker to free one. Likewise, once a shard's WAL
    files on disk reach ``wal_max_bytes + wal_file_bytes`` its writers wait until
    merges let the oldest files be deleted (the message says which). This error
    bounds that wait. The write was not applied.
    """


class CorruptionError(FuseDBError):
    """Raised when a file fails verification: bad magic or checksum, truncation,
    unknown format version, or a file the manifest references is missing.

    ``path`` and ``offset`` name where the damage was found.
    """

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.path = path
        self.offset = offset

    def __reduce__(self):
        return (type(self), (self.args[0], self.path, self.offset))


class DiskError(FuseDBError, OSError):
    """Raised to a writer when the WAL cannot be written or fsynced (ENOSPC, EIO).

    The database stays readable; the WAL writer keeps retrying, and once the disk
    accepts writes again nothing acknowledged is lost. In ``sync`` mode the write
    that gets this error was *applied* (it is visible, and becomes durable when
    the disk recovers) but was not acknowledged as durable: do not blindly retry
    a non-idempotent call such as ``incr``."""


class SharedMemoryError(FuseDBError, OSError):
    """Raised by ``open`` (or ``connect``) when shared memory cannot be created or
    reserved: ``/dev/shm`` lacks the bytes the database needs (ENOSPC), or the
    system refuses another object (EMFILE, ENOMEM).

    Shared memory is reserved (``posix_fallocate``) when it is created, so a full
    ``/dev/shm`` shows here, at open, and never later as a SIGBUS. Nothing of the
    failed open is left in ``/dev/shm``; the database's files are untouched. The
    message names ``/dev/shm``, the bytes needed and the bytes free."""


class UnknownOptionError(InvalidArgumentError, TypeError):
    """Raised by ``open`` and ``connect`` for an option that does not exist (a
    ``TypeError`` too, as Python raises for an unknown keyword argument). The
    message names it, the options it is close to, and the valid options."""


class NotADatabaseError(InvalidArgumentError):
    """Raised by ``open`` for a path that cannot be a FuseDB database: a file (a
    database is a directory), or a directory that is not empty and holds
    neither FuseDB's identity file ``FUSEDB`` nor a database of an earlier
    FuseDB version (a ``MANIFEST`` or WAL file of FuseDB's). Nothing in it is
    changed. Open an empty (or missing) directory to create a database."""


class PermissionDeniedError(FuseDBError, PermissionError):
    """Raised by ``open`` when this user may not create, read or write the
    database directory or a file in it, and by ``connect`` when the database's
    shared memory belongs to another user and is not shared with a group of
    this process (``open(..., group=...)``). The message names the path, its
    owner and the permission needed. Nothing is changed."""


class LockedError(FuseDBError):
    """Raised by ``open`` when the database directory is already open: by
    another live process (the message names its pid; attach to it with
    ``fusedb.connect`` if it runs multiprocess), or by this very process (use
    the handle that opened it: handles are thread-safe)."""


class FuseDBKeyError(FuseDBError, KeyError):
    """Raised by the mapping protocol (``db[key]``, ``del db[key]``) for a missing key."""


class NotRunningError(FuseDBError):
    """Raised by ``fusedb.connect`` when no live multiprocess database is open at the
    path: nothing open, it runs embedded, it is closing or its router process is
    gone, or an open in progress did not finish within ``connect``'s timeout.
    ``transient`` is False when waiting cannot help (it runs embedded);
    ``connect(path, start=True)`` waits out the others. ``opening`` is True when
    an open (or the end of a close) is in progress: ``connect`` waits for it."""

    def __init__(self, *args, transient: bool = True, opening: bool = False):
        super().__init__(*args)
        self.transient = transient
        self.opening = opening


class LockTimeoutError(FuseDBError):
    """Raised when a shard lock could not be taken within ``lock_timeout`` seconds.

    A lock whose holder died is repaired by the shard's worker well within that
    time; this error means the shard has no working worker (or a live process
    holds the lock, e.g. one stopped with SIGSTOP). Nothing was applied."""


class ForkedError(FuseDBError):
    """Raised when a handle inherited through ``fork()`` is used in the child and
    cannot re-attach there (an embedded database lives in its parent only)."""
