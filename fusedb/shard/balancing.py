"""Shard balancing on a shard's merge loop: gather every leaf's load, ask the
pure policy (fusedb.core.balance) what to do, and do it if it is this shard's
to do (a move out of this shard, or a split of one of its leaves).

Every shard's merge loop runs it, once per ``BALANCE_TICKS`` merge ticks; they
see (almost) the same loads, so only the most loaded shard's loop acts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from fusedb.core.balance import BalancePolicy, LeafLoad, balance
from fusedb.core.layout import MAX_SEGS, M_NEXT_LEAF
from fusedb.errors import LockTimeoutError
from fusedb.shard.moving import adopt_orphans, free_orphans, move_leaf
from fusedb.shm.slab import H_HEAP

#: A balancing round every this many merge ticks (``merge_tick``: 0.05 s by
#: default, so once a second).
BALANCE_TICKS = 20
#: At most this many moves in one balancing round.
MOVES_PER_ROUND = 8

log = logging.getLogger("fusedb")


class Balancer:
    """Balancing for one shard's merge loop (fusedb.shard.worker.Worker; only
    that thread calls it). ``merger``: the shard's Merger."""

    def __init__(self, merger):
        self.merger = merger
        self.ctx = ctx = merger.ctx
        o = ctx.opts
        self.policy = BalancePolicy(ctx.meta.shards, o.min_split_entries, ctx.meta.max_leaves)
        self.interval = BALANCE_TICKS * o.merge_tick
        self._due = time.monotonic() + self.interval
        self._writes: dict[int, int] = {}
        #: Leaves a balance split could not cut: entries they need before another try.
        self._unsplit: dict[int, int] = {}
        self._adopted = False

    def round(self) -> bool:
        """Free the old slabs of moved leaves that may go; then, if a balancing
        round is due, run it. Returns whether a leaf moved or split. Raises what
        Merger.merge_leaf and move_leaf raise (transient disk errors: nothing
        published). A lock held past ``lock_timeout`` by a live process (one
        stopped with SIGSTOP, say) skips the round (logged): nothing was done."""
        try:
            return self._round()
        except LockTimeoutError as e:
            log.warning("shard %d: balancing skipped this round: %s", self.merger.no, e)
            return False

    def _round(self) -> bool:
        merger = self.merger
        if not self._adopted:
            adopt_orphans(merger)
            self._adopted = True
        free_orphans(merger)
        now = time.monotonic()
        if now < self._due or self.policy.shards < 2:
            return False
        self._due = now + self.interval
        loads, total = self.loads()
        acted = False
        # Several moves per round, the loads updated after each (the policy
        # lowers the spread with every move, so this ends): a shard made of
        # many small leaves is evened out in a few rounds, not one leaf a second.
        for _ in range(MOVES_PER_ROUND):
            d = balance(loads, total, self.policy)
            if d is None or self.ctx.meta.shard[d.leaf] != merger.no:
                break
            if d.action == "move":
                if not move_leaf(merger, d.leaf, d.to):
                    break
                loads = tuple(replace(lf, shard=d.to) if lf.leaf == d.leaf else lf
                              for lf in loads)
            else:
                before = self.ctx.meta.hdr[M_NEXT_LEAF]
                merger.merge_leaf(d.leaf, True, split=True)
                if self.ctx.meta.hdr[M_NEXT_LEAF] == before:
                    # No split point (one key, say): not again until it doubles.
                    self._unsplit[d.leaf] = 2 * next(lf.entries for lf in loads
                                                     if lf.leaf == d.leaf)
                    break
            acted = True
            log.debug("shard %d: %s leaf %d%s (%s)", merger.no, d.action, d.leaf,
                     f" to shard {d.to}" if d.action == "move" else "", d.reason)
            if d.action == "split":
                break       # the loads changed shape: the next round measures again
        return acted

    def loads(self) -> tuple[tuple[LeafLoad, ...], int]:
        """Every leaf's load, read without shard locks (a heuristic: the move
        checks again under the locks), and the database's leaf count. ``writes``
        counts the mutations since this loop's previous round."""
        ctx = self.ctx
        meta = ctx.meta
        with ctx.meta_lock:
            _bounds, ids = meta.routes()
        cols = meta.copy_leaf_table(meta.hdr[M_NEXT_LEAF])
        heaps = [sh.arena.copy_headers()[:, H_HEAP] for sh in ctx.shards]
        out = []
        for leaf in ids:
            no = cols["shard"][leaf]
            if no >= len(heaps):
                continue
            base = leaf * MAX_SEGS
            segs = ctx.segments.open_segments(
                cols["segs"][base:base + cols["nsegs"][leaf]].tolist(), missing_ok=True) or []
            buffered = sum(int(heaps[no][s]) for s in (cols["active"][leaf], cols["frozen"][leaf])
                           if s >= 0)
            writes = cols["writes"][leaf]
            entries = sum(s.count for s in segs)
            if entries < self._unsplit.get(leaf, 0):
                entries = 0     # a balance split found no split point: not yet again
            out.append(LeafLoad(leaf, no, sum(s.size for s in segs) + buffered,
                                max(0, writes - self._writes.get(leaf, writes)),
                                entries, cols["frozen"][leaf] < 0))
            self._writes[leaf] = writes
        return tuple(out), len(ids)
