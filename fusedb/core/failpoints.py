"""Failpoints: named places in the engine where a test can inject a delay or a fault.

Production code calls :func:`hit` at a few chosen places; with nothing armed it
is one dict lookup. Tests arm a point with a callable (which may block, sleep or
raise) and must disarm it (``with armed(...)``).

Points: ``merge.before_publish`` (a merge's or split's segments are written, not
yet published); ``split.before_publish`` (the same, for a merge that splits);
``merge.publish_locked`` (the same, with the shard lock taken); ``route.switch``
(a routing change is half done: the route version is odd); ``wal.write`` and
``wal.fsync`` (the WAL writer is about to write the ring to the WAL file / fsync
it: raise OSError here to simulate ENOSPC or EIO); ``wal.before_unlink`` (a
fully merged WAL file is about to be deleted); ``publish.before_rename`` and
``publish.before_dir_fsync`` (a segment or manifest is fsynced under its
temporary name / renamed but the directory not yet fsynced); ``lock.acquired``
(a multiprocess lock was just taken, nothing done under it yet: checked only
when a lock is built, so an unarmed point costs nothing per acquisition);
``batch.locked`` (a batch holds every shard lock it needs, nothing written).

Disk faults (arm with a callable raising ``OSError(errno.ENOSPC, ...)`` or
``EIO``): ``segment.write`` and ``manifest.write`` (the first bytes of a segment
/ the manifest are in its temporary file: a half-written file);
``wal.rotate`` (the next WAL file is created, its header not yet written);
``wal.before_unlink`` (WAL truncation); ``segment.before_unlink`` (a segment a
merge replaced is about to be deleted); ``shm.create`` (a shared-memory object
is created, not yet reserved or mapped, or a semaphore is about to be created:
a full ``/dev/shm`` at open). They fire in the process that armed them;
worker processes arm them from ``FUSEDB_WORKER_FAILPOINTS`` (fusedb.worker.process).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

_points: dict[str, Callable[[], None]] = {}


def hit(name: str) -> None:
    fn = _points.get(name)
    if fn is not None:
        fn()


def is_armed(name: str) -> bool:
    """Whether ``name`` is armed (for code that wraps a primitive only then, so that
    an unarmed point costs nothing at all on a hot path)."""
    return name in _points


def arm(name: str, fn: Callable[[], None]) -> None:
    """Arm ``name`` for the rest of the process (worker processes under test)."""
    _points[name] = fn


@contextlib.contextmanager
def armed(name: str, fn: Callable[[], None]) -> Iterator[None]:
    _points[name] = fn
    try:
        yield
    finally:
        _points.pop(name, None)
