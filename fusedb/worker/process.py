"""A shard's worker process: ``python -m fusedb.worker.process DIR SHARD``.

Started by the router (fusedb.router.spawn), one per shard. It attaches to the
database's shared memory (fusedb.worker.role.WorkerStore) and runs, for its
shard only, the WAL writer (a thread) and the merge loop
(fusedb.shard.worker.Worker, on the main thread). At every wake-up it
also:

* notices its router is gone (it is the router's child: ``getppid`` changes),
  marks the database closed so no process writes any more, writes the WAL
  ring out to disk and exits; the next ``open`` recovers from the files;
* notices the router closes the database, merges every buffer of the shard into
  segments, writes the ring out and exits 0;
* serves ``flush()`` requests of any process;
* repairs the shard if a process died holding its lock (the lock's repair flag
  or the kernel's owner-died mark, fusedb.shm.locks; fusedb.worker.repair).

A disk error (ENOSPC, EDQUOT, EIO) never ends the process: the worker logs one
line to stderr (logger ``"fusedb"``, which this process sends there), retries
with backoff (fusedb.core.retry) and logs one line when it works again. Every
other handled condition is one log line too, never a traceback (a traceback
means a bug): a lock held past ``lock_timeout`` by a live process
(fusedb.shard.worker, fusedb.worker.role.PatientLock), a dead holder found at
close, and whatever handled condition still reaches :func:`main` (the process
then exits 1, or EXIT_DISK_ERROR for a disk error, and the router restarts it).

Test hook: ``FUSEDB_WORKER_FAILPOINTS`` (fusedb.worker.testhooks).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from fusedb.core import retry
from fusedb.errors import LockTimeoutError
from fusedb.runtime import hooks
from fusedb.shard.worker import Worker
from fusedb.shm.locks import RepairNeeded
from fusedb.shm.meta import M_ROUTER_PID, M_STATE, STATE_OPEN, W_FLUSH_DONE, W_FLUSH_REQ, W_PID, \
    W_REPAIRS
from fusedb.worker.repair import repair_shard
from fusedb.worker.role import WorkerStore
from fusedb.worker.testhooks import arm_from_env


log = logging.getLogger("fusedb")
EXIT_DISK_ERROR = retry.EXIT_DISK_ERROR


def run(path: str, no: int) -> int:
    """Serve shard ``no`` of the database at ``path`` until it closes or its
    router dies; returns the process's exit code (0, 1, or EXIT_DISK_ERROR)."""
    store = WorkerStore(path, no)
    meta = store.meta
    shard = store.shard
    router = meta.hdr[M_ROUTER_PID]
    slots = meta.worker_slots(no)
    orphan = False
    lock = shard.lock         # this process repairs its shard (fusedb.shm.locks)
    repairing = False         # the lock is held for a repair a disk error interrupted

    def repair_if_needed(now: bool = False) -> None:
        """Repair the shard if a process died holding its lock (a locker got
        EOWNERDEAD from the robust mutex and set the repair flag), or finish a
        repair a disk error interrupted (after the worker's backoff, or ``now``).
        Raises a transient OSError (fusedb.core.retry) to be retried, still holding
        the lock; RepairNeeded if the lock is needed again meanwhile."""
        nonlocal repairing
        if not repairing:
            if not lock.needs_repair():
                return
            try:
                if not lock.acquire_for_repair():
                    return
            except LockTimeoutError:
                return     # a live process holds it for now; the next wake-up retries
            repairing = True
            dead = lock.dead_holder()
            log.warning("shard %d: a process died holding the shard lock%s; repairing "
                        "from the WAL", no, f" (thread {dead})" if dead else "")
        elif worker.retry.waiting() and not now:
            return
        try:
            with retry.step("shard repair"):
                replaced = repair_shard(store, store.merger)
        except BaseException as e:
            if retry.transient(e) is not None:
                # A disk error before anything was published (repair_shard removed
                # its files): keep the lock and retry after the worker's backoff.
                raise
            # Half repaired: never release the lock over that. This process
            # ends holding it, so the kernel marks its owner dead, the repair
            # flag stays set, and the next worker repairs again from the start.
            traceback.print_exc()
            os._exit(1)
        repairing = False
        slots[W_REPAIRS] += 1     # counted before anyone sees the shard again
        lock.repaired()
        store.after_publish(replaced)
        worker.retry.succeeded()

    def housekeeping() -> None:
        nonlocal orphan
        if os.getppid() != router:
            orphan = True
            worker.stopping.set()
            return
        if meta.hdr[M_STATE] != STATE_OPEN:
            worker.stopping.set()
            return
        repair_if_needed()
        req = slots[W_FLUSH_REQ]
        if req > slots[W_FLUSH_DONE] and not worker.retry.waiting():
            # (after a failed attempt the requester got DiskError; the request
            # stays and is served by the next attempt, after the backoff)
            worker.flush()
            slots[W_FLUSH_DONE] = req

    worker = Worker(store.merger, store, store.wake_events[no], housekeeping)
    wal_writer = store.wal_writer
    wal_writer.start()
    try:
        repair_if_needed()      # a predecessor may have died holding the lock
    except RepairNeeded:
        worker.wakeup.set()     # needed again meanwhile: the loop's first round does it
    except OSError as e:
        if retry.transient(e) is None:
            raise
        worker.failed(e)        # the worker's loop retries it
    slots[W_PID] = os.getpid()
    worker.run()
    code = 0
    try:
        if store.error is not None:
            traceback.print_exception(store.error, file=sys.stderr)
            code = 1
        elif orphan:
            # The router is gone: no process may write any more (writers check the
            # state under the shard lock), and the ring goes to disk. Nothing is
            # merged: the next open replays the WAL.
            try:
                with store.meta_lock.inner:     # (not the patient wait: an orphan exits)
                    meta.close_routing()
            except (LockTimeoutError, RepairNeeded):
                # A live process keeps the meta lock (or this shard needs repair
                # first): close anyway, the state word is one store.
                meta.close_routing()
            try:
                with shard.lock:
                    pass
            except (LockTimeoutError, RepairNeeded):
                pass     # a dead holder: the ring up to its head is whole anyway
        else:
            try:
                for _ in range(3):
                    try:
                        repair_if_needed(now=True)
                        store.flush()
                        break
                    except RepairNeeded:
                        continue   # a process died holding the lock meanwhile: repair, again
                else:
                    log.warning("shard %d: processes kept dying holding the shard lock during "
                                "the close; the WAL is kept and the next open replays it", no)
                    code = 1
            except OSError as e:
                if retry.transient(e) is None:
                    raise
                # Not merged: the WAL (written out below) holds every write, and the
                # router keeps it for the next open to replay.
                traceback.clear_frames(e.__traceback__)
                log.warning("shard %d: could not merge at close: %s; the WAL is kept "
                            "and the next open replays it", no, retry.transient(e))
                code = EXIT_DISK_ERROR
    finally:
        try:
            wal_writer.stop()
        except OSError as e:
            log.warning("shard %d: the WAL could not be written out at close: %s", no, e)
            code = EXIT_DISK_ERROR if retry.transient(e) is not None else 1
        store.release_shm()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path, no = argv[0], int(argv[1])
    hooks.worker_process()      # the process-wide side effects (signals)
    # This process's log lines (a disk error and its recovery: one line each, no
    # traceback) go to its stderr, which is the router's.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("fusedb: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    arm_from_env()
    try:
        return run(path, no)
    except (RepairNeeded, LockTimeoutError) as e:
        # Handled conditions, not bugs: the shard is repaired by the next worker
        # (or the next open), a live holder's lock is waited for by it.
        log.warning("shard %d: %s; the worker process exits", no, e)
        return 1
    except OSError as e:
        if retry.transient(e) is None:
            raise
        # A full or failing disk where the loop could not retry it (attaching,
        # starting the WAL writer): the router restarts the worker (one line each).
        log.warning("shard %d: %s; the worker process exits", no, retry.transient(e))
        return EXIT_DISK_ERROR


if __name__ == "__main__":
    sys.exit(main())
