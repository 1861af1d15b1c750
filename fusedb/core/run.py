"""A *run*: a batch of entries as parallel numpy columns.

Runs are how bulk code (merge, split, segment writing, scan snapshots) moves
entries around without touching them one by one in Python. Key and value bytes
stay in a heap; each entry points at them with (start, length).

A run read from a buffer slab is unsorted; a run read from a segment, or made by
:func:`fusedb.core.merge.merge_runs`, is sorted by key with unique keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Run:
    """Entries as parallel numpy columns, one row per entry; keys and values are
    (start, length) into ``kheap``/``vheap``. A value with no lock of its own,
    used by one thread: made by Slab.to_run (a copy under the shard lock for
    scans; views over shared memory for the merge loop, of a frozen slab only),
    Segment.to_run (views of the immutable mapping), the WAL reader and the
    merge functions; read by merges, splits, scans, recovery and the tools."""

    hash: np.ndarray     # uint64, xxh3_64 of the key
    seq: np.ndarray      # uint64, per-leaf sequence number of the mutation
    exp: np.ndarray      # float64, absolute expiry time, 0.0 = never
    kind: np.ndarray     # uint8, entry.KIND_*
    kstart: np.ndarray   # int64, offset of the key in kheap
    klen: np.ndarray     # int64
    kheap: np.ndarray    # uint8
    vstart: np.ndarray   # int64, offset of the value in vheap
    vlen: np.ndarray     # int64
    vheap: np.ndarray    # uint8

    def __len__(self) -> int:
        return len(self.hash)

    def key(self, i: int) -> bytes:
        s = int(self.kstart[i])
        return self.kheap[s:s + int(self.klen[i])].tobytes()

    def value(self, i: int) -> bytes:
        s = int(self.vstart[i])
        return self.vheap[s:s + int(self.vlen[i])].tobytes()

    def take(self, idx: np.ndarray | slice) -> Run:
        """The entries at ``idx`` (the heaps are shared, not copied)."""
        return Run(self.hash[idx], self.seq[idx], self.exp[idx], self.kind[idx],
                   self.kstart[idx], self.klen[idx], self.kheap,
                   self.vstart[idx], self.vlen[idx], self.vheap)


def empty_run() -> Run:
    z64 = np.zeros(0, np.int64)
    return Run(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.float64),
               np.zeros(0, np.uint8), z64, z64, np.zeros(0, np.uint8), z64, z64,
               np.zeros(0, np.uint8))


def gather(heap: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``heap[starts[i]:starts[i]+lens[i]]`` for every i, vectorised.

    Returns (packed bytes, offsets) where offsets has len(starts)+1 entries.
    """
    lens = lens.astype(np.int64, copy=False)
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    total = int(offsets[-1])
    if total == 0:
        return np.zeros(0, np.uint8), offsets
    # For output byte t of entry i: source = starts[i] + (t - offsets[i]).
    shift = np.repeat(starts.astype(np.int64, copy=False) - offsets[:-1], lens)
    idx = np.arange(total, dtype=np.int64)
    idx += shift
    return heap[idx], offsets


def concat(runs: list[Run]) -> tuple[Run, np.ndarray]:
    """All entries of ``runs`` in one run, plus each entry's run number (its rank)."""
    if not runs:
        return empty_run(), np.zeros(0, np.int64)
    kbase = np.cumsum([0] + [len(r.kheap) for r in runs[:-1]])
    vbase = np.cumsum([0] + [len(r.vheap) for r in runs[:-1]])
    out = Run(
        np.concatenate([r.hash for r in runs]),
        np.concatenate([r.seq for r in runs]),
        np.concatenate([r.exp for r in runs]),
        np.concatenate([r.kind for r in runs]),
        np.concatenate([r.kstart + kb for r, kb in zip(runs, kbase)]),
        np.concatenate([r.klen for r in runs]),
        np.concatenate([r.kheap for r in runs]),
        np.concatenate([r.vstart + vb for r, vb in zip(runs, vbase)]),
        np.concatenate([r.vlen for r in runs]),
        np.concatenate([r.vheap for r in runs]),
    )
    rank = np.repeat(np.arange(len(runs), dtype=np.int64), [len(r) for r in runs])
    return out, rank


def fixed_width_keys(run: Run) -> np.ndarray:
    """Keys as a NUL-padded ``S<w>`` array. Sort by (this, klen) for exact byte order:
    padding makes b"a" and b"a\\0" equal here, and the length breaks the tie."""
    n = len(run)
    w = max(int(run.klen.max()) if n else 1, 1)
    if n == 0 or len(run.kheap) == 0:
        return np.zeros((n, w), np.uint8).view(f"S{w}").reshape(n)
    cols = np.arange(w, dtype=np.int64)
    idx = run.kstart.astype(np.int64)[:, None] + cols
    np.minimum(idx, len(run.kheap) - 1, out=idx)
    mat = run.kheap[idx]
    mat[cols[None, :] >= run.klen[:, None]] = 0
    return np.ascontiguousarray(mat).view(f"S{w}").reshape(n)


def compact(run: Run) -> Run:
    """The same entries with their keys and values copied into fresh, tight heaps
    (so a small run stops pinning a big source buffer)."""
    kheap, koff = gather(run.kheap, run.kstart, run.klen)
    vheap, voff = gather(run.vheap, run.vstart, run.vlen)
    return Run(run.hash, run.seq, run.exp, run.kind, koff[:-1], run.klen, kheap,
               voff[:-1], run.vlen, vheap)
