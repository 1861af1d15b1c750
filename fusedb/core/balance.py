"""STUB (the policy branch replaces this file): the interface only."""

from __future__ import annotations

from dataclasses import dataclass

from fusedb.core.scheduler import Decision


@dataclass(frozen=True)
class LeafLoad:
    leaf: int
    shard: int
    bytes: int
    writes: int
    entries: int
    movable: bool


@dataclass(frozen=True)
class BalancePolicy:
    shards: int
    min_split_entries: int
    max_leaves: int
    tolerance: float = 0.15
    min_bytes: int = 1 << 20
    min_writes: int = 10_000


def balance(leaves, total_leaves, policy):
    return None


def balance(leaves, total_leaves, policy):  # noqa: F811 - STUB, replaced by the policy branch
    by = [0] * policy.shards
    for lf in leaves:
        by[lf.shard] += lf.bytes
    total = sum(by)
    if total < policy.min_bytes:
        return None
    hi = max(range(policy.shards), key=by.__getitem__)
    lo = min(range(policy.shards), key=by.__getitem__)
    gap = by[hi] - by[lo]
    if gap < policy.tolerance * total / policy.shards:
        return None
    mine = [lf for lf in leaves if lf.shard == hi]
    cands = [lf for lf in mine if lf.movable and 0 < lf.bytes < gap]
    if cands:
        best = min(cands, key=lambda lf: abs(lf.bytes - gap / 2))
        return Decision("move", best.leaf, reason="stub", to=lo)
    big = max(mine, key=lambda lf: lf.bytes)
    if big.entries >= policy.min_split_entries and total_leaves < policy.max_leaves:
        return Decision("split", big.leaf, True, "balance")
    return None
