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
