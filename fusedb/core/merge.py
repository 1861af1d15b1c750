"""Local merge: several runs of one leaf -> one sorted run, vectorised with numpy.

This is the whole of "compaction" in FuseDB: it only ever reads one leaf's frozen
buffer and segments, and writes that leaf's new segment(s). See docs/design.md,
"Local merge".
"""

from __future__ import annotations

import bisect

import numpy as np

from fusedb.core.entry import KIND_DEL
from fusedb.core.run import Run, concat, fixed_width_keys


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


def _sort_key_matrix(run: Run) -> np.ndarray:
    """Each key NUL-padded, then its length as two big-endian bytes, then NUL
    padding to a multiple of 8 bytes: rows compare (as bytes) exactly as the keys
    do, the length breaking the tie between b"a" and b"a\\0"."""
    n = len(run)
    skeys = fixed_width_keys(run)
    w = skeys.dtype.itemsize
    width = (w + 2 + 7) & ~7
    mat = np.zeros((n, width), np.uint8)
    mat[:, :w] = skeys.view(np.uint8).reshape(n, w)
    mat[:, w] = (run.klen >> 8).astype(np.uint8)
    mat[:, w + 1] = (run.klen & 0xFF).astype(np.uint8)
    return mat


def _by_key(mat: np.ndarray) -> np.ndarray:
    """Stable order of the rows of ``mat`` by their bytes."""
    n, width = mat.shape
    return np.argsort(mat.view(f"S{width}").reshape(n), kind="stable")


def newest_per_key(run: Run) -> Run:
    """One entry per key, the one latest in ``run``'s order, sorted by key. For log
    replay, where ``run`` is in write order (most entries overwrite a few keys).

    Groups equal keys by a vectorised 64-bit hash of their padded bytes (a stable
    integer sort, much faster than sorting byte strings), checks that every group
    really holds one key (falling back to a byte-string sort on a collision), and
    sorts only the survivors by key."""
    n = len(run)
    if n == 0:
        return run
    mat = _sort_key_matrix(run)
    words = mat.view("<u8")
    h = np.full(n, 0xCBF29CE484222325, np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for c in range(words.shape[1]):
            h ^= words[:, c]
            h *= prime
            h ^= h >> np.uint64(29)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    last = np.ones(n, bool)
    last[:-1] = hs[1:] != hs[:-1]
    group_last = np.flatnonzero(last)
    rep = np.repeat(order[group_last], np.diff(np.concatenate(([-1], group_last))))
    if not (mat[order] == mat[rep]).all():        # a hash collision: exact path
        order = _by_key(mat)
        s = mat[order]
        last = np.ones(n, bool)
        last[:-1] = (s[1:] != s[:-1]).any(axis=1)
        return run.take(order[last])
    survivors = order[last]
    return run.take(survivors[_by_key(mat[survivors])])


class _Keys:
    """A sorted run seen as a sequence of keys (bytes), for ``bisect``. Made by
    :func:`key_index` for one search and dropped after it, on the calling
    thread; no lock: it only reads the run (a value, or views of a frozen
    buffer or an immutable segment)."""

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
