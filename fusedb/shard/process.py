"""A shard's worker process: ``python -m fusedb.shard.process DIR SHARD``.

Started by the router (fusedb.store.Store, role "router"), one per shard. It
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

Test hook: ``FUSEDB_WORKER_FAILPOINTS="point=kill,point2=sleep:5"`` arms
failpoints in the worker (``kill`` sends SIGKILL to itself there;
``killonce:FILE`` does so only if FILE does not exist yet, creating it;
``marksleep:FILE:SECONDS`` creates FILE, then sleeps).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback

from .. import failpoints
from ..errors import LockTimeoutError
from ..shm.meta import M_ROUTER_PID, M_STATE, STATE_OPEN, W_FLUSH_DONE, W_FLUSH_REQ, W_PID, \
    W_REPAIRS
from ..shm import locks
from ..shm.locks import RepairNeeded
from ..store import Store
from .worker import Worker


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

    def repair_if_needed() -> None:
        if not lock.needs_repair():
            return
        try:
            if not lock.acquire_for_repair():
                return
        except LockTimeoutError:
            return     # a live process holds it for now; the next wake-up retries
        dead = lock.dead_holder()
        print(f"fusedb: shard {no}: a process died holding the shard lock"
              f"{f' (thread {dead})' if dead else ''}; repairing from the WAL",
              file=sys.stderr)
        try:
            replaced = store.repair_shard(shard)
        except BaseException:
            # Half repaired: never release the lock over that. This process
            # ends holding it, so the kernel marks its owner dead, the repair
            # flag stays set, and the next worker repairs again from the start.
            traceback.print_exc()
            os._exit(1)
        lock.repaired()
        slots[no * 4 + W_REPAIRS] += 1
        store.after_publish(replaced)

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
        if req > slots[no * 4 + W_FLUSH_DONE]:
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
            repair_if_needed()
            store.flush_shard(shard)
    finally:
        try:
            flusher.stop()
        except OSError as e:
            print(f"fusedb: shard {no}: the WAL could not be flushed: {e}", file=sys.stderr)
            code = 1
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
    _arm_failpoints()
    return run(path, no)


if __name__ == "__main__":
    sys.exit(main())
