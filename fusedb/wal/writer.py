"""The WAL writer: moves a shard's WAL ring to WAL files and applies the durability
mode. One thread per shard in embedded mode.

Modes (option ``durability``):

* ``sync``: writers wait, after releasing the shard lock, until their record is
  fsynced. The WAL writer fsyncs whatever the ring holds at once, so concurrent
  writers share one fsync (group commit).
* ``interval``: the ring is written to the file every ``write_tick`` and fsynced
  at least every ``sync_interval`` seconds.
* ``none``: written every ``write_tick``, fsynced only when a file is rotated or
  the database closes.

In every mode an acknowledged write is in the ring, which survives the death of
the process in /dev/shm; the modes differ in what survives the loss of the OS.

A disk error (ENOSPC, EIO) stops the WAL writer's progress, not the database: the
error is recorded, writers get it as :class:`fusedb.errors.DiskError` once the
ring is full (or at once in ``sync`` mode), reads go on, and the WAL writer retries
the write at every tick. A transient error while *rotating* (starting the next
file) is not one writers see (the current file took their records): rotation is
retried with backoff (fusedb.core.retry) and the current file grows meanwhile. Both
are logged once per episode and shown by ``stats()``.

Back-pressure from the WAL bound (docs/design.md, "Back-pressure"): when the
shard's WAL files on disk reach ``limit`` bytes (``Options.wal_limit_bytes``),
the WAL writer stops advancing the ring's room base (ring slot R_ROOM), so writers
can append at most one ring more and then wait for ring space, as when the disk
is slow; the WAL writer itself keeps writing and fsyncing what the ring holds (sync
mode's waiters, merges' ``sync_now``, close and salvage are never held back). It
wakes the merge worker, whose merges (scheduler rule 4) let the oldest files be
deleted; once the count is under the limit the room base moves again. The WAL on
disk thus stays under ``limit + ring capacity + 64 bytes per file started
meanwhile`` whatever the scheduling.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import traceback

from fusedb.core import failpoints, retry
from fusedb.core.fileio import create, fsync_dir, write_all
from fusedb.core.layout import F_CURRENT, S_DISK_ERROR
from fusedb.errors import DiskError
from fusedb.wal.format import FILE_HEADER, file_name, write_file_header
from fusedb.wal.reader import list_files
from fusedb.wal.ring import (R_DURABLE, R_FILE_NO, R_FILE_START, R_WRITTEN, R_HEAD, R_ROOM,
                             R_WAL_BYTES, Ring)

MODES = ("sync", "interval", "none")


class WalWriter(threading.Thread):
    """A shard's WAL writer: a thread of the process that runs the shard's
    background work (the embedded process, or the shard's worker process). It
    alone advances the ring's ``written``, ``durable``, file and room slots,
    without the shard lock; :meth:`write_out` (also called by the merge worker
    through :meth:`sync_now`, and by :meth:`stop`) is serialised by
    ``_write_lock``, :meth:`truncate` (the merge worker) by ``_truncate_lock``."""

    def __init__(self, dirpath: str, shard: int, ring: Ring, mode: str, sync_interval: float,
                 file_bytes: int, write_tick: float = 0.005, kick=None,
                 faults=None, limit: int = 0, wake=None, stats=None):
        super().__init__(name=f"fusedb-wal-{shard}", daemon=True)
        self.dirpath = dirpath
        self.shard = shard
        self.ring = ring
        self.mode = mode
        self.sync_interval = sync_interval
        self.file_bytes = file_bytes
        self.write_tick = write_tick
        #: Set by writers to ask for a write-out now: a threading.Event, or a named
        #: semaphore (fusedb.shm.locks.SemEvent) when writers are other processes.
        self.kick = kick if kick is not None else threading.Event()
        #: The shard's stats words (Meta.shard_stats(shard)), or None: its
        #: S_DISK_ERROR word is set to 1 while writes fail, so writers in other
        #: processes see the disk error too.
        self.stats = stats
        #: Failure state of this WAL writer (logging, stats() and rotation backoff),
        #: if given the meta block's ``faults`` view.
        self.retry = retry.Retrier(faults, shard, retry.WAL_WRITER) if faults is not None else None
        #: Bytes of WAL files on disk at which writers are held back (0: never).
        self.limit = limit
        #: Set (``.set()``) when the count reaches ``limit``: the shard's merge worker.
        self.wake = wake
        self.over = False   # the count is at or past ``limit``
        self.stopping = threading.Event()
        self.cond = threading.Condition()
        self.error: OSError | None = None
        self.attempts = 0   # flush() calls so far (a writer raises only on a fresh failure)
        self._write_lock = threading.Lock()   # the thread and sync_now() both write out
        self._partial = False   # a write of [written, head) may be half done in the file
        self.fd = -1
        self._last_sync = time.monotonic()
        #: (file number, start position) of every WAL file of this run, oldest first.
        #: Changed by this thread (rotation) and by the merge worker (truncate).
        self.files: list[tuple[int, int]] = self._older_files()
        self._files_lock = threading.Lock()     # files, size and the published count
        self._truncate_lock = threading.Lock()  # one truncation at a time
        self._open_current()

    # -- files ---------------------------------------------------------------------------

    def _older_files(self) -> list[tuple[int, int]]:
        """(number, start) of this shard's WAL files before the current one: none at
        open; a worker restarted mid-run takes over the files its predecessor made."""
        out = []
        current = self.ring.hdr[R_FILE_NO]
        for no, path in list_files(self.dirpath).get(self.shard, []):
            if no < current:
                with open(path, "rb") as f:
                    head = f.read(FILE_HEADER.size)
                if len(head) == FILE_HEADER.size:
                    out.append((no, FILE_HEADER.unpack(head)[4]))
        return out

    def _open_current(self) -> None:
        hdr = self.ring.hdr
        path = os.path.join(self.dirpath, file_name(self.shard, hdr[R_FILE_NO]))
        self.fd = create(path, os.O_WRONLY | os.O_APPEND)
        size = os.fstat(self.fd).st_size
        if size > FILE_HEADER.size:
            # Taking over from a WAL writer that died: it may have written part of
            # [written, head) without advancing written. Cut back to a record boundary.
            keep = FILE_HEADER.size + hdr[R_WRITTEN] - hdr[R_FILE_START]
            if size > keep:
                os.ftruncate(self.fd, keep)
        if os.fstat(self.fd).st_size == 0:
            try:
                write_file_header(self.fd, self.shard, hdr[R_FILE_NO], hdr[R_FILE_START],
                                  os.write)
                os.fsync(self.fd)
                fsync_dir(self.dirpath)
            except BaseException:
                os.close(self.fd)
                self.fd = -1
                os.unlink(path)
                raise
        self.size = os.fstat(self.fd).st_size
        with self._files_lock:
            self.files.append((hdr[R_FILE_NO], hdr[R_FILE_START]))
            self._count()

    def _rotate(self) -> None:
        """Start the next WAL file at the current written position. The new file is
        created, given its header and fsynced before the old one is closed; if any
        step fails the partial new file is removed and the old one stays current."""
        os.fsync(self.fd)
        hdr = self.ring.hdr
        no, start = hdr[R_FILE_NO] + 1, hdr[R_WRITTEN]
        path = os.path.join(self.dirpath, file_name(self.shard, no))
        fd = create(path, os.O_WRONLY | os.O_TRUNC | os.O_APPEND)
        try:
            failpoints.hit("wal.rotate")
            size = write_file_header(fd, self.shard, no, start, os.write)
            os.fsync(fd)
            fsync_dir(self.dirpath)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)     # else garbage: recovery skips a file without a header
            raise
        os.close(self.fd)
        self.fd = fd
        hdr[R_DURABLE] = start
        hdr[R_FILE_START] = start
        hdr[R_FILE_NO] = no
        with self._files_lock:
            self.size = size
            self.files.append((no, start))
            self._count()

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        tick = self.write_tick if self.mode != "sync" else 0.05
        while not self.stopping.is_set():
            self.kick.wait(tick)
            self.kick.clear()
            self.write_out(fsync=self.mode == "sync" or (
                self.mode == "interval"
                and time.monotonic() - self._last_sync >= self.sync_interval))

    def sync_now(self) -> None:
        """Write and fsync everything the ring holds now, from the calling thread.
        The store calls it before a manifest makes merged buffers durable, so a
        segment never holds a write the log could still lose (the recovered state
        is always a prefix of the shard's history). Raises DiskError."""
        self.write_out(fsync=True)
        if self.error is not None:
            raise DiskError(f"the WAL could not be made durable: {self.error}") from self.error

    def write_out(self, fsync: bool) -> None:
        """Write the ring to the file (and fsync if asked); record a disk error
        instead of raising it, so the thread keeps retrying."""
        with self._write_lock:
            self._write_out(fsync)

    def _write_out(self, fsync: bool) -> None:
        hdr = self.ring.hdr
        failed = None
        waiting = False     # a rotation is due but its retry is not
        try:
            with retry.step("WAL write"):
                head = hdr[R_HEAD]
                written = hdr[R_WRITTEN]
                if self._partial:
                    # A failed write may have left part of [written, head) in the file:
                    # cut it back so the retry starts on a record boundary.
                    os.ftruncate(self.fd, self.size)
                    self._partial = False
                if head > written:
                    self._partial = True
                    failpoints.hit("wal.write")
                    for chunk in self.ring.chunks(written, head):
                        with chunk:
                            write_all(self.fd, chunk, os.write)
                    self._partial = False
                    with self._files_lock:   # size and written change together
                        self.size += head - written
                        hdr[R_WRITTEN] = head
                        self._count()
                if fsync and hdr[R_DURABLE] < hdr[R_WRITTEN]:
                    target = hdr[R_WRITTEN]
                    failpoints.hit("wal.fsync")
                    os.fsync(self.fd)
                    hdr[R_DURABLE] = target
                    self._last_sync = time.monotonic()
                elif fsync:
                    self._last_sync = time.monotonic()
            self.error = None
            if self.size >= self.file_bytes and not self.stopping.is_set():
                waiting = self.retry is not None and self.retry.waiting()
                if not waiting:
                    with retry.step("WAL rotation"):
                        self._rotate()
        except OSError as e:
            traceback.clear_frames(e.__traceback__)   # frames hold views of the ring
            failed = e
            if getattr(e, "fusedb_step", None) != "WAL rotation" or retry.transient(e) is None:
                self.error = e
            # else: the current file took the records; the rotation is retried
            # with backoff and writers see nothing
        if self.stats is not None:
            self.stats[S_DISK_ERROR] = 1 if self.error is not None else 0
        if self.retry is not None:
            if failed is not None and retry.transient(failed) is not None:
                self.retry.failed(failed)
            elif failed is None and not waiting:
                self.retry.succeeded()
        self.attempts += 1
        with self.cond:
            self.cond.notify_all()

    def truncate(self, floor: int) -> None:
        """Delete the WAL files whose records all lie below stream position ``floor``
        (materialised in segments named by a durable manifest). Never the current file.
        Several merge workers may call it at once (embedded: each publication
        truncates every shard): one check-and-delete runs at a time."""
        with self._truncate_lock:
            while True:
                with self._files_lock:
                    if len(self.files) < 2 or self.files[1][1] > floor:
                        return
                    no = self.files[0][0]
                failpoints.hit("wal.before_unlink")
                os.unlink(os.path.join(self.dirpath, file_name(self.shard, no)))
                with self._files_lock:   # only truncate removes files: [0] is still no
                    self.files.pop(0)
                    self._count()

    def wal_files(self) -> tuple[tuple[int, int], ...]:
        """The shard's WAL files on disk, oldest first, the current one last:
        (stream position of the file's first record, bytes of the file). A file
        holds its 64-byte header and the stream from its start to the next file's
        start; the current one, what was written so far."""
        with self._files_lock:
            starts = [start for _no, start in self.files] + [None]
            size = self.size
        return tuple((a, b - a + FILE_HEADER.size if b is not None else size)
                     for a, b in zip(starts, starts[1:]))

    def _count(self) -> None:
        """Publish the bytes of the shard's WAL files on disk in the ring header
        (R_WAL_BYTES), where every process reads it for ``stats()``, and apply the
        back-pressure: under ``limit`` the ring's room base (R_ROOM) moves up to
        the written position; at or past it the room base stays, so writers can
        add at most one ring to the files until merges and truncation bring the
        count under the limit again (then the worker is woken once).

        Called after every change of the files, the size or the written
        position, which change together under ``_files_lock`` (held by the
        caller): the count is always that of the files up to ``written``."""
        files = self.files
        hdr = self.ring.hdr
        total = (self.size + (files[-1][1] - files[0][1]) + FILE_HEADER.size * (len(files) - 1))
        hdr[R_WAL_BYTES] = total
        if not self.limit or total < self.limit:
            hdr[R_ROOM] = hdr[R_WRITTEN]
            self.over = False
        elif not self.over:
            self.over = True
            if self.wake is not None:
                self.wake.set()

    def wait_durable(self, pos: int) -> None:
        """Block until stream position ``pos`` is fsynced (sync mode)."""
        hdr = self.ring.hdr
        self.kick.set()
        first = self.attempts
        with self.cond:
            while hdr[R_DURABLE] < pos:
                if self.error is not None and self.attempts > first:
                    raise DiskError(f"the WAL could not be made durable: {self.error}") \
                        from self.error
                self.cond.wait(0.05)
                self.kick.set()

    def stop(self) -> None:
        """Stop the thread after a last write and fsync; raise a disk error if any."""
        self.stopping.set()
        self.kick.set()
        self.join()
        self.write_out(fsync=True)
        os.close(self.fd)
        self.fd = -1
        if self.error is not None:
            raise DiskError(f"the WAL could not be written: {self.error}") from self.error


class RemoteWalWriter:
    """A shard's WAL writer as seen from a process it does not run in (made by the
    store of a client or router process, used by its writer threads in sync
    mode, no lock): the durable position is read from the ring header, a write-out
    is asked for through the shard's kick semaphore, and a disk error is read
    from the meta block. ``stats`` and ``faults``: the shard's words
    (Meta.shard_stats(shard), Meta.shard_faults(shard))."""

    def __init__(self, ring: Ring, kick, stats, shard: int, faults=None):
        self.ring = ring
        self.kick = kick
        self.stats = stats
        self.shard = shard
        self.faults = faults

    @property
    def error(self) -> OSError | None:
        if self.stats[S_DISK_ERROR]:
            packed = self.faults[F_CURRENT[retry.WAL_WRITER]] if self.faults is not None else 0
            no = (packed >> 8) or errno.EIO
            return OSError(no, f"{os.strerror(no)}: the WAL of shard {self.shard} cannot be "
                               f"written")
        return None

    def wait_durable(self, pos: int) -> None:
        """Block until stream position ``pos`` is fsynced (sync mode)."""
        hdr = self.ring.hdr
        self.kick.set()
        delay = 0.00005
        while hdr[R_DURABLE] < pos:
            err = self.error
            if err is not None:
                raise DiskError(f"the WAL could not be made durable: {err}") from err
            time.sleep(delay)
            delay = min(delay * 2, 0.002)
