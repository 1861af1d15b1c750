"""A shard's worker process: ``python -m fusedb.worker.process DIR SHARD``.

Started by the router (fusedb.runtime.store.Store, role "router"), one per shard. It
attaches to the database's shared memory and runs, for its shard only, the WAL
flusher (a thread) and the merge loop (the main thread). At every wake-up it
also:

* notices its router is gone (it is the router's child: ``getppid`` changes),
  marks the database closed so no process writes any more, flushes the WAL
  ring to disk and exits; the next ``open`` recovers from the files;
* notices the router closes the database, merges every buffer of the shard into
  segments, flushes and exits 0;
* serves ``flush()`` requests of any process;
* repairs the shard if a process died holding its lock (the lock's repair flag
  or the kernel's owner-died mark, fusedb.shm.locks; Store.repair_shard).

A disk error (ENOSPC, EDQUOT, EIO) never ends the process: the worker logs one
line to stderr (logger ``"fusedb"``, which this process sends there), retries
with backoff (fusedb.core.retry) and logs one line when it works again.

Test hook: ``FUSEDB_WORKER_FAILPOINTS="point=kill,point2=sleep:5"`` arms
failpoints in the worker (``kill`` sends SIGKILL to itself there;
``killonce:FILE`` does so only if FILE does not exist yet, creating it;
``marksleep:FILE:SECONDS`` creates FILE, then sleeps; ``oserror:NAME:FILE``
raises ``OSError(errno.NAME)`` there while FILE exists).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import time
import traceback

from fusedb.core import failpoints, retry
from fusedb.errors import LockTimeoutError
from fusedb.shm.meta import M_ROUTER_PID, M_STATE, STATE_OPEN, W_FLUSH_DONE, W_FLUSH_REQ, W_PID, \
    W_REPAIRS
from fusedb.shm import locks
from fusedb.shm.locks import RepairNeeded
from fusedb.runtime.store import Store
from fusedb.shard.worker import Worker


log = logging.getLogger("fusedb")
EXIT_DISK_ERROR = retry.EXIT_DISK_ERROR


def _arm_failpoints() -> None:
    spec = os.environ.get("FUSEDB_WORKER_FAILPOINTS", "")
    for item in filter(None, spec.split(",")):
        point, _, action = item.partition("=")
        if action == "kill":
            failpoints.arm(point, lambda: os.kill(os.getpid(), signal.SIGKILL))
        elif action.startswith("killonce:"):
            # Die here the first time any worker gets here (the marker file says
            # it happened), so the restarted worker goes on.
            marker = action[9:]

            def kill_once(marker=marker) -> None:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return
                os.kill(os.getpid(), signal.SIGKILL)
            failpoints.arm(point, kill_once)
        elif action.startswith("marksleep:"):
            # Create FILE (so a test knows the worker got here), then sleep.
            marker, _, secs = action[10:].rpartition(":")

            def mark_sleep(marker=marker, secs=float(secs)) -> None:
                open(marker, "a").close()
                time.sleep(secs)
            failpoints.arm(point, mark_sleep)
        elif action.startswith("oserror:"):
            # Raise OSError(errno NAME) while FILE exists (a test's "disk full"
            # switch): "oserror:ENOSPC:/path/to/marker".
            name, _, marker = action[8:].partition(":")
            no = getattr(errno, name)

            def fail_while(marker=marker, no=no) -> None:
                if os.path.exists(marker):
                    raise OSError(no, f"{os.strerror(no)} (injected)")
            failpoints.arm(point, fail_while)
        elif action.startswith("sleep:"):
            secs = float(action[6:])
            failpoints.arm(point, lambda secs=secs: time.sleep(secs))
        else:
            raise SystemExit(f"bad FUSEDB_WORKER_FAILPOINTS entry {item!r}")


def run(path: str, no: int) -> int:
    store = Store(path, None, role="worker", shard_no=no)
    meta = store.meta
    shard = store.shards[no]
    router = meta.hdr[M_ROUTER_PID]
    slots = meta.workers
    orphan = False
    worker = Worker(store, shard, store.wake_events[no])

    lock = shard.lock
    lock.repairer = True      # this process repairs its shard (fusedb.shm.locks)
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
                replaced = store.repair_shard(shard)
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
        slots[no * 4 + W_REPAIRS] += 1     # counted before anyone sees the shard again
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
        req = slots[no * 4 + W_FLUSH_REQ]
        if req > slots[no * 4 + W_FLUSH_DONE] and not worker.retry.waiting():
            # (after a failed attempt the requester got DiskError; the request
            # stays and is served by the next attempt, after the backoff)
            worker.flush()
            slots[no * 4 + W_FLUSH_DONE] = req

    def stuck() -> None:
        # Not while this thread holds the lock: that is the repair itself.
        if lock.needs_repair() and not lock.held_here():
            raise RepairNeeded(f"shard {no} needs repair")

    worker.housekeeping = housekeeping
    locks.stuck_hook = stuck
    flusher = shard.flusher
    flusher.start()
    try:
        repair_if_needed()      # a predecessor may have died holding the lock
    except RepairNeeded:
        worker.wakeup.set()     # needed again meanwhile: the loop's first round does it
    except OSError as e:
        if retry.transient(e) is None:
            raise
        worker.failed(e)        # the worker's loop retries it
    slots[no * 4 + W_PID] = os.getpid()
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
                with store.meta_lock:
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
                repair_if_needed(now=True)
                store.flush_shard(shard)
            except OSError as e:
                if retry.transient(e) is None:
                    raise
                # Not merged: the WAL (flushed below) holds every write, and the
                # router keeps it for the next open to replay.
                traceback.clear_frames(e.__traceback__)
                log.warning("shard %d: could not merge at close: %s; the WAL is kept "
                            "and the next open replays it", no, retry.transient(e))
                code = EXIT_DISK_ERROR
    finally:
        try:
            flusher.stop()
        except OSError as e:
            log.warning("shard %d: the WAL could not be flushed at close: %s", no, e)
            code = EXIT_DISK_ERROR if retry.transient(e) is not None else 1
        store._release_shm()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path, no = argv[0], int(argv[1])
    # Ctrl-C, `timeout`, `kill -TERM -PGID` and a systemd stop reach the whole
    # process group: the router handles them and stops the workers in order, so a
    # worker must not die of them on its own (if the router dies instead, the
    # worker notices and exits).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # This process's log lines (a disk error and its recovery: one line each, no
    # traceback) go to its stderr, which is the router's.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("fusedb: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    _arm_failpoints()
    return run(path, no)


if __name__ == "__main__":
    sys.exit(main())
