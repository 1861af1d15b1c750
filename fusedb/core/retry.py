"""Retrying background I/O after a disk error (docs/design.md, "Durability").

A shard's background work — merges, splits, manifest writes, WAL truncation
(the merge worker) and WAL writes, fsyncs and rotation (the WAL writer) — can
meet a full or failing disk. Those errors are *transient*: the condition is
outside FuseDB and can go away (space is freed, a quota raised, a flaky device
or network file system answers again), and every background step can simply be
run again, because it writes a fresh temporary file from inputs that do not
change until it publishes (a merge's frozen buffer and segments, the ring's
unwritten bytes). So the step is retried, with exponential backoff, and the
database heals by itself once the disk accepts writes.

Which errors are transient: ``OSError`` with errno ``ENOSPC`` (no space),
``EDQUOT`` (disk quota exceeded) or ``EIO`` (an I/O error of the device).
Every other error still fails the database loudly: ``ENOENT`` (one of our files
vanished), ``EACCES``/``EPERM``, ``EROFS`` (the file system went read-only:
it does not come back without an operator), ``EBADF``/``EINVAL`` (a bug), and
any exception that is not an ``OSError`` (a bug) are not conditions a retry
can fix, and retrying them would hide them.

Backoff: the first retry after :data:`FIRST_DELAY` seconds (10 ms), doubling
after each failure up to :data:`MAX_DELAY` (1 s). So a background path costs at
most one failed attempt per second while the disk stays full, and the database
is working again at most about a second after space returns.

State for operators: each shard has a record in the meta block
(``Meta.faults``, docs/format.md) with the current error of its merge worker
and of its WAL writer (0 while healthy), the last error seen, and the number
of failed attempts; ``FuseDB.stats()`` shows it per shard. Each path logs one
line (logger ``"fusedb"``, WARNING) when it starts failing or its error
changes, and one line (INFO) when it works again; never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterator

from fusedb.core.layout import F_CURRENT, F_FAILURES, F_LAST

log = logging.getLogger("fusedb")

#: Errnos of the disk conditions a retry can outlast.
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})
#: First retry delay after a failure, seconds.
FIRST_DELAY = 0.01
#: Longest retry delay, seconds.
MAX_DELAY = 1.0

#: Exit status of a worker process that could not merge its shard (or write
#: out its WAL) at close because of a disk error (the router's close() then raises DiskError).
EXIT_DISK_ERROR = 3

#: Background steps, by code (the code is what the meta block records).
STEPS = ("background work", "merge", "split", "manifest write", "WAL truncation",
         "segment deletion", "WAL write", "WAL rotation", "shard repair", "flush")
#: The two background paths of a shard: its merge worker and its WAL writer.
WORKER, WAL_WRITER = 0, 1
_PATHS = ("merge worker", "WAL writer")
_PLAN = ("retrying with backoff (10 ms doubling up to 1 s); reads go on, and writes while "
         "buffer memory lasts; nothing acknowledged is lost",
         "retrying every few ms; reads go on; writers get DiskError once the WAL ring is "
         "full (in sync mode at once); nothing acknowledged is lost")

# Per shard, F_WORDS u64 words of Meta.faults (fusedb.core.layout F_*): the current
# error of each path (packed errno << 8 | step code; 0 = healthy), the last error of
# either path (packed), and the failed attempts of each path since open.


def transient(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc`` if it is a transient disk error, else None.

    A :class:`fusedb.errors.DiskError` (the WAL could not be made durable) is
    judged by the ``OSError`` it was raised from."""
    if not isinstance(exc, OSError):
        return None
    cause = exc.__cause__
    if exc.errno is None and isinstance(cause, OSError):
        exc = cause
    return exc if exc.errno in TRANSIENT_ERRNOS else None


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Label an ``OSError`` raised inside with the background step ``name`` (one
    of :data:`STEPS`), for the log line and ``stats()``. The innermost label wins."""
    try:
        yield
    except OSError as e:
        if getattr(e, "fusedb_step", None) is None:
            e.fusedb_step = name
        raise


def describe(packed: int) -> str | None:
    """Readable form of a packed error word: ``"ENOSPC (No space left on
    device) in merge"``; None for 0."""
    if not packed:
        return None
    no, code = packed >> 8, packed & 0xFF
    what = STEPS[code] if code < len(STEPS) else f"step {code}"
    return f"{errno.errorcode.get(no, str(no))} ({os.strerror(no)}) in {what}"


class Retrier:
    """The failure state and backoff of one background path of one shard.

    Made by the path's owner: the merge worker (fusedb.shard.worker) and the
    WAL writer (fusedb.wal.writer.WalWriter), in the process that runs them.
    ``faults`` is the shard's fault words (``Meta.shard_faults(shard)``, u64,
    indexed by F_*); they are
    written here so every process's ``stats()`` sees the state. No lock: each
    path is driven by one thread at a time, and each word has one writer (F_LAST
    two, each a single 8-byte store)."""

    def __init__(self, faults, shard: int, path: int):
        self.faults = faults
        self.shard = shard
        self.path = path
        self.delay = 0.0            # current backoff delay (0: healthy)
        self.retry_at = 0.0         # time.monotonic() before which not to retry
        self.failures = 0           # failed attempts in the current episode
        self.since = 0.0            # time.monotonic() of the episode's first failure
        self._logged = 0            # packed error last logged
        # A new owner of the path (a restarted worker process) starts healthy: the
        # error its predecessor recorded is not known to persist.
        faults[F_CURRENT[path]] = 0

    @property
    def failing(self) -> bool:
        return self.delay > 0.0

    def waiting(self) -> bool:
        """Whether the path is failing and its next retry is not due yet."""
        return self.delay > 0.0 and time.monotonic() < self.retry_at

    def failed(self, exc: BaseException) -> float:
        """Record a failed attempt (``transient(exc)`` is not None); log it if the
        error is new in this episode; return the delay before the next retry."""
        now = time.monotonic()
        err = transient(exc) or exc
        step_name = getattr(exc, "fusedb_step", None) or getattr(err, "fusedb_step", None)
        code = STEPS.index(step_name) if step_name in STEPS else 0
        packed = ((getattr(err, "errno", 0) or 0) << 8) | code
        if not self.failing:
            self.since = now
            self.failures = 0
        self.failures += 1
        self.delay = min(MAX_DELAY, self.delay * 2) if self.delay else FIRST_DELAY
        self.retry_at = now + self.delay
        f = self.faults
        f[F_CURRENT[self.path]] = packed
        f[F_LAST] = packed
        f[F_FAILURES[self.path]] += 1
        if packed != self._logged:
            self._logged = packed
            log.warning("shard %d: %s failed: %s; %s", self.shard, STEPS[code], err,
                        _PLAN[self.path] if STEPS[code] != "WAL rotation" else _PLAN[WORKER])
        return self.delay

    def succeeded(self) -> None:
        """Record a successful attempt; log the recovery if the path was failing."""
        if not self.failing:
            return
        log.info("shard %d: %s works again after %d failed attempt%s in %.1f s", self.shard,
                 _PATHS[self.path], self.failures, "" if self.failures == 1 else "s",
                 time.monotonic() - self.since)
        self.faults[F_CURRENT[self.path]] = 0
        self.delay = 0.0
        self.retry_at = 0.0
        self._logged = 0


def shard_state(f) -> dict:
    """The ``stats()`` fields of one shard's background state (see the module doc).
    ``f``: the shard's fault words (``Meta.shard_faults(shard)``)."""
    now = [describe(f[i]) for i in F_CURRENT]
    return {"background_error": "; ".join(s for s in now if s) or None,
            "last_background_error": describe(f[F_LAST]),
            "background_failures": sum(f[i] for i in F_FAILURES)}
