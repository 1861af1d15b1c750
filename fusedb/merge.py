"""Local merge: several runs of one leaf -> one sorted run, vectorised with numpy.

This is the whole of "compaction" in FuseDB: it only ever reads one leaf's frozen
buffer and segments, and writes that leaf's new segment(s). See docs/design.md,
"Local merge".
"""

from __future__ import annotations

import bisect

import numpy as np

from .entry import KIND_DEL
from .run import Run, concat, fixed_width_keys


def merge_runs(runs: list[Run], now: float, drop_dead: bool) -> Run:
    """Merge ``runs`` (newest first) into one run sorted by key, one entry per key.

    Where a key appears in several runs the entry of the newest run wins (runs of
    one leaf never overlap in seqno: a newer run holds only newer mutations).
    With ``drop_dead`` tombstones and entries expired at ``now`` are removed; the
    caller passes it only when the oldest data of the leaf is among the inputs,
    so nothing older can resurface.
    """
    allr, rank = concat(runs)
    n = len(allr)
    if n == 0:
        return allr
    skeys = fixed_width_keys(allr)
    # lexsort: last key is primary -> by key bytes, then length, then rank (newest first).
    order = np.lexsort((rank, allr.klen, skeys))
    sk = skeys[order]
    kl = allr.klen[order]
    first = np.ones(n, bool)
    first[1:] = (sk[1:] != sk[:-1]) | (kl[1:] != kl[:-1])
    out = allr.take(order[first])
    if drop_dead:
        dead = (out.kind == KIND_DEL) | ((out.exp != 0.0) & (out.exp <= now))
        if dead.any():
            out = out.take(np.flatnonzero(~dead))
    return out


def newest_per_key(run: Run) -> Run:
    """One entry per key, the one latest in ``run``'s order, sorted by key. For log
    replay, where ``run`` is in write order: vectorised, no heap copies."""
    n = len(run)
    if n == 0:
        return run
    skeys = fixed_width_keys(run)
    order = np.lexsort((np.arange(n - 1, -1, -1), run.klen, skeys))
    sk = skeys[order]
    kl = run.klen[order]
    first = np.ones(n, bool)
    first[1:] = (sk[1:] != sk[:-1]) | (kl[1:] != kl[:-1])
    return run.take(order[first])


class _Keys:
    """A sorted run seen as a sequence of keys, for ``bisect``."""

    def __init__(self, run: Run):
        self.run = run

    def __len__(self) -> int:
        return len(self.run)

    def __getitem__(self, i: int) -> bytes:
        return self.run.key(i)


def key_index(run: Run, key: bytes) -> int:
    """Position of the first entry of sorted ``run`` whose key is >= ``key``."""
    return bisect.bisect_left(_Keys(run), key)


def cut(run: Run, lo: bytes, hi: bytes | None) -> Run:
    """The entries of sorted ``run`` with lo <= key < hi (hi None = unbounded)."""
    a = key_index(run, lo) if lo else 0
    b = key_index(run, hi) if hi is not None else len(run)
    if a == 0 and b == len(run):
        return run
    return run.take(slice(a, max(a, b)))


def split_point(run: Run, lo: bytes) -> bytes | None:
    """A key that splits sorted ``run`` into two halves of about equal bytes,
    strictly greater than ``lo``; None if the run is too small to split."""
    n = len(run)
    if n < 2:
        return None
    sizes = np.cumsum(run.klen + run.vlen)
    i = int(np.searchsorted(sizes, sizes[-1] / 2))
    i = min(max(i, 1), n - 1)
    key = run.key(i)
    return key if key > lo else None
