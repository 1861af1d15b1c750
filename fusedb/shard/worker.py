"""The shard's merge loop: wakes on a signal or a tick, asks the scheduler what
to do, does it (through the shard's fusedb.shard.merging.Merger). In embedded
mode it is a daemon thread of the opening process; multiprocess, it runs on the
main thread of the shard's worker process (fusedb.worker.process).

The loop is the only code that merges or splits the shard's leaves, so a
leaf's segment list and key range change only here (and in the close-time
flush, which runs after the loop has stopped).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable

from fusedb.core.retry import WORKER, Retrier, transient
from fusedb.core.scheduler import LeafView, Policy, ShardView, decide
from fusedb.shard.balancing import Balancer
from fusedb.shard.context import ShardContext
from fusedb.shard.merging import Merger
from fusedb.errors import LockTimeoutError
from fusedb.shm.locks import RepairNeeded

log = logging.getLogger("fusedb")


class Worker(threading.Thread):
    """A shard's merge loop. Embedded: started as a daemon thread by the embedded
    role (fusedb.runtime.embedded) and stopped by its close; multiprocess: its
    :meth:`run` is called on the main thread of the shard's worker process
    (fusedb.worker.process). Other threads only call :meth:`request_flush` and
    :meth:`stop`. Holds no lock between rounds; the Merger takes the shard lock.

    ``wakeup``: set by writers when a buffer fills (a threading.Event in embedded
    mode, a named semaphore, fusedb.shm.locks.SemEvent, when writers are other
    processes). ``housekeeping``: called at every wake-up before scheduling (the
    worker process checks its router, close requests, flush requests and dead
    lock holders there)."""

    def __init__(self, merger: Merger, ctx: ShardContext, wakeup,
                 housekeeping: Callable[[], None] | None = None):
        super().__init__(name=f"fusedb-worker-{merger.no}", daemon=True)
        self.ctx = ctx
        self.merger = merger
        self.shard = merger.shard
        self.wakeup = wakeup
        self.stopping = threading.Event()
        self.housekeeping = housekeeping
        o = ctx.opts
        self.policy = Policy(o.leaf_max_bytes, o.hot_fills, o.min_split_entries, o.max_segments,
                             ctx.meta.max_leaves, o.low_free_fraction, o.wal_max_bytes)
        self._fill_times: dict[int, collections.deque] = {}
        self._last_fills: dict[int, int] = {}
        self._last_writes: dict[int, int] = {}
        self._flush_waiters: queue.SimpleQueue[threading.Event] = queue.SimpleQueue()
        #: Moves and splits that balance load across shards (fusedb.shard.balancing).
        self.balancer = Balancer(merger)
        #: Failure state and backoff of this shard's background work (fusedb.core.retry).
        self.retry = Retrier(ctx.meta.shard_faults(merger.no), merger.no, WORKER)

    def run(self) -> None:
        """The loop: wake on a signal or a tick, do housekeeping, then serve flush
        requests or run a scheduling round (:meth:`step`).

        A transient disk error (fusedb.core.retry: ENOSPC, EDQUOT, EIO) in a round is
        logged and retried with backoff: until the retry is due, wake-ups from
        writers do not start another round (they would turn the backoff into a
        busy loop), but flush requests do. What failed published nothing, or was
        published in shared memory but not yet in the manifest (the next round
        writes that manifest first), so retrying is safe. Any other exception
        is a bug: it is handed to every caller (ShardContext.fail) and the loop ends."""
        tick = self.ctx.opts.merge_tick
        merger = self.merger
        retry = self.retry
        while not self.stopping.is_set():
            self.wakeup.wait(tick)
            self.wakeup.clear()
            if self.stopping.is_set():
                break
            waiters = []
            while not self._flush_waiters.empty():
                waiters.append(self._flush_waiters.get())
            error = None
            progress = merger.progress
            try:
                if self.housekeeping is not None:
                    self.housekeeping()
                    if self.stopping.is_set():
                        break
                if waiters:
                    self.flush()
                elif retry.waiting():
                    continue
                else:
                    if merger.replaced or merger.manifest_pending:
                        # A failed round published merges but not their manifest
                        # (or failed to truncate the WAL after it): write it first (it
                        # also frees the WAL and the segments they replaced).
                        merger.write_manifest()
                    self.step()
                if merger.progress != progress:
                    retry.succeeded()   # (a round that wrote nothing tells nothing)
            except RepairNeeded as e:
                # A process died holding the shard lock: this round is dropped (it
                # published nothing) and housekeeping repairs the shard next.
                traceback.clear_frames(e.__traceback__)
                self.wakeup.set()
            except LockTimeoutError as e:
                # A live process held the shard or manifest lock past lock_timeout
                # (multiprocess: a stopped client, say). The round is dropped and
                # the next tick runs another: a shard-lock wait times out before a
                # merge publishes (the frozen buffer stays; the attempt's unpublished
                # segment files are garbage the next open removes), a manifest-lock
                # wait leaves the manifest pending (Merger.write_manifest), so
                # nothing is half published. The meta lock, which a split takes
                # mid-publication, never times out in a worker process
                # (fusedb.worker.role.PatientLock).
                traceback.clear_frames(e.__traceback__)
                log.warning("shard %d: %s; the merge round is retried", self.merger.no, e)
            except BaseException as e:  # noqa: BLE001 - retried, or handed to every caller
                # The traceback's frames hold numpy views of shared memory (a merge's
                # inputs); clear their locals so close() can unmap the arena.
                traceback.clear_frames(e.__traceback__)
                if transient(e) is None:
                    self.ctx.fail(e)
                    return
                self.failed(e)
                error = e
            finally:
                for ev in waiters:
                    ev.error = error
                    ev.set()

    def failed(self, exc: BaseException) -> None:
        """Record a transient disk error of this shard's background work (logged,
        shown by stats()); the next round runs after the backoff delay."""
        self.retry.failed(exc)

    def request_flush(self) -> threading.Event:
        """Ask for :meth:`flush`; the event is set when it is done or failed (then
        its ``error`` attribute is the transient disk error that stopped it)."""
        ev = threading.Event()
        ev.error = None
        self._flush_waiters.put(ev)
        self.wakeup.set()
        return ev

    def flush(self) -> None:
        """Merge every buffer of the shard into segments, then run scheduling rounds
        until the policy has nothing left to do (splits included), at most 16."""
        for row in self.merger.snapshot_leaves()[0]:
            self.merger.flush_leaf(row[0])
        for _ in range(16):
            if not self.step():
                break

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()
        self.join()

    def view(self) -> ShardView:
        rows, free, total_leaves = self.merger.snapshot_leaves()
        now = time.monotonic()
        window = self.ctx.opts.hot_window
        leaves = []
        for leaf, has_frozen, has_active, fill, segids, writes, fills, wal_pos in rows:
            times = self._fill_times.setdefault(leaf, collections.deque())
            new = fills - self._last_fills.get(leaf, 0)
            times.extend([now] * max(0, min(new, self.policy.hot_fills)))
            self._last_fills[leaf] = fills
            while times and times[0] < now - window:
                times.popleft()
            segs = self.ctx.segments.open_segments(segids)
            leaves.append(LeafView(leaf, has_frozen, fill, has_active, len(segids),
                                   sum(s.size for s in segs), sum(s.count for s in segs),
                                   len(times), writes - self._last_writes.get(leaf, 0), wal_pos))
            self._last_writes[leaf] = writes
        return ShardView(tuple(leaves), free, self.shard.arena.nslabs, total_leaves,
                         self.shard.wal_writer.wal_files())

    def step(self) -> int:
        """One scheduling round: decide on the current state, execute in order, then
        write one manifest for the round if anything was published (which also
        deletes the WAL files the merges freed: ``ShardContext.after_publish``).
        Returns the number of decisions."""
        decisions = decide(self.view(), self.policy)
        published = False
        for d in decisions:
            if self.stopping.is_set():
                break
            split = d.action == "split" or d.then_split
            # A merge that only adds a segment replaces none, yet it moves the
            # WAL floor: its manifest must be written too.
            published |= self.merger.merge_leaf(d.leaf, d.full, split, write_manifest=False)
            if split:
                self._fill_times.pop(d.leaf, None)
        if published or self.merger.replaced:
            self.merger.write_manifest()     # one manifest for the whole round
        elif not decisions and self.shard.wal_writer.over and len(self.shard.wal_writer.files) > 1:
            # Writers wait on the WAL limit, yet no buffer holds the oldest files:
            # a truncation failed (or ran before the last merge's floor moved).
            # Write the manifest again: it deletes them, and lets the writers go on.
            self.merger.write_manifest()
        self.balancer.round()
        return len(decisions)
