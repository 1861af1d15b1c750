"""Shard balance: a pure policy that decides which leaf moves to which shard.

A new database splits on the first key byte, so keys sharing a prefix start in
one shard and stay there as that leaf splits (both halves of a split stay in
the leaf's shard). The mechanism moves a leaf from shard ``src`` to shard
``dst`` online (executed by ``src``'s merge loop); this module only decides,
from plain values: no I/O, no shared memory, no clock. The caller builds one
:class:`LeafLoad` per leaf of the whole database once per balance round and
runs what :func:`balance` returns (at most one decision per round).

**Load.** A shard's work is of two kinds: what its data costs (segment bytes
to merge, mmapped pages, buffer heap) and what its writes cost (the shard
lock, WAL appends, buffers filled and merged). A leaf's load is the mean of
its share of the database's bytes and its share of the round's writes (a
fraction; when one of the two totals is 0, the other share alone), so a shard
of cold data and a shard of a few hot counters both count. Loads are shares,
so the loads of the shards sum to 1 and their mean is ``1 / shards``.

**Rule.** While some shard's load is off that mean by more than ``tolerance``
of it, the most loaded shard (the sender) gives to the least loaded one (the
receiver), ``gap`` being the difference of their loads. Moving a leaf of load
``l`` changes the sender to ``S - l`` and the receiver to ``D + l``; the sum
of squared deviations from the mean ``m`` changes by::

    (S - l - m)² + (D + l - m)² - (S - m)² - (D - m)²  =  2 l (l - gap)

which is negative exactly when ``0 < l < gap``, and most negative at
``l = gap / 2``. So the move taken is that of the sender's movable leaf whose
load is closest to ``gap / 2`` among those with ``0 < l <= gap - margin``,
``margin = tolerance × mean / 2``. The margin is for measured loads: a leaf
just under the gap would swap the two shards' loads, and the next round's
noise in the write counts could make it qualify again, the other way (the
simulation saw a leaf go back and forth every round without it); with it, a
move back needs the loads to shift by ``2 × margin``. If the sender has none,
because its load sits in leaves too big to move (one leaf holding everything,
as in a new database), its largest-load leaf with at least
``min_split_entries`` entries is split (both halves stay in the sender; a later
round moves one), if the database is below ``max_leaves``. If a leaf would
qualify but cannot move this round (it holds a frozen buffer), nothing is
decided: a split is irreversible and costs a leaf, the move is possible a
round later, once the buffer is merged.

**Convergence.** While the loads stand still, every move strictly lowers the
sum of squared deviations ``Σ (load - mean)²`` (by ``2 l (gap - l) > 0``), and
a split leaves every shard's load as it was. Between two splits the number of
leaves is fixed, so there are finitely many placements of leaves on shards and
none can recur (the sum only falls): the moves stop. Splits are at most
``max_leaves`` minus the leaves there are. So after finitely many rounds every
shard is within tolerance, or no move and no split can bring one closer, and
:func:`balance` returns None; in particular no leaf moves back and forth
forever (a leaf moved back would restore a placement already left). When the
loads change (a hot range appears), the same argument holds from the new
loads on; the tolerance band keeps noise in the per-round write counts from
causing moves once the shards are close to the mean. ``tests/test_balance_policy.py``
simulates it (Zipf writes over ``user:<n>`` and ``session:<hex>`` keys, frozen
buffers, a hot range appearing): from one leaf, every shard comes within ±25 %
of the mean in at most ``6 × shards + 4`` rounds, with at most as many moves
and splits in all.

**A tiny database** (fewer than ``min_bytes`` bytes in all and fewer than
``min_writes`` writes in the round) is left alone: there is no work to spread,
and the shares of a handful of keys would move leaves for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusedb.core.scheduler import Decision


@dataclass(frozen=True)
class LeafLoad:
    """One leaf's size and activity for :func:`balance` (no lock: immutable
    value, built by the caller from a snapshot of the leaf table)."""

    leaf: int
    shard: int
    bytes: int      # the leaf's bytes: its segment files + its buffers' heap bytes
    writes: int     # mutations since the previous balance round (the caller's delta)
    entries: int    # entries in its segments (a split needs >= min_split_entries)
    movable: bool   # no frozen buffer now (a move needs none)


@dataclass(frozen=True)
class BalancePolicy:
    """What :func:`balance` works with (no lock: immutable value). ``shards``:
    the database's shard count; ``min_split_entries`` and ``max_leaves`` as the
    Options fields of those names (entries; leaf slots of the meta block)."""

    shards: int
    min_split_entries: int
    max_leaves: int
    #: act while a shard's load is off the mean by more than this fraction of it
    tolerance: float = 0.15
    #: below this many bytes in the whole database, and fewer writes than
    #: ``min_writes`` in the round, do nothing (a tiny database)
    min_bytes: int = 1 << 20
    min_writes: int = 10_000


def leaf_loads(leaves) -> list[float]:
    """Each leaf's load, in the order of ``leaves`` (LeafLoad values): the mean
    of its share of all bytes and its share of all writes, a fraction; the one
    share alone when the other total is 0; all 0.0 when both totals are."""
    total_bytes = sum(lf.bytes for lf in leaves)
    total_writes = sum(lf.writes for lf in leaves)
    if total_bytes and total_writes:
        return [(lf.bytes / total_bytes + lf.writes / total_writes) / 2 for lf in leaves]
    if total_bytes:
        return [lf.bytes / total_bytes for lf in leaves]
    if total_writes:
        return [lf.writes / total_writes for lf in leaves]
    return [0.0] * len(leaves)


def shard_loads(leaves, policy: BalancePolicy) -> list[float]:
    """Per shard (index = shard number, ``policy.shards`` of them), the summed
    :func:`leaf_loads` of its leaves: fractions summing to 1, or all 0.0 when
    the leaves hold no bytes and had no writes. Raises ValueError if a leaf
    names a shard outside ``range(policy.shards)`` (a caller's bug)."""
    return _by_shard(leaves, leaf_loads(leaves), policy.shards)


def _by_shard(leaves, loads: list[float], shards: int) -> list[float]:
    out = [0.0] * shards
    for lf, load in zip(leaves, loads):
        if not 0 <= lf.shard < shards:
            raise ValueError(f"leaf {lf.leaf} is in shard {lf.shard}, "
                             f"not one of the {shards} shards")
        out[lf.shard] += load
    return out


def balance(leaves: tuple[LeafLoad, ...], total_leaves: int,
            policy: BalancePolicy) -> Decision | None:
    """The one thing to do this round for shard balance, or None.

    ``leaves``: every leaf of the database; ``total_leaves``: the database's
    leaf count (a split needs ``total_leaves < policy.max_leaves``). Returns
    ``Decision("move", leaf, reason=..., to=dst)`` (run by the leaf's shard's
    merge loop), ``Decision("split", leaf, True, "balance")`` (both halves stay
    in the leaf's shard), or None: fewer than 2 shards, a tiny database, every
    shard within ``tolerance`` of the mean load, or nothing that would help
    (see the module docstring for the rule and why it converges). Raises
    ValueError as :func:`shard_loads`."""
    if policy.shards < 2:
        return None
    if (sum(lf.bytes for lf in leaves) < policy.min_bytes
            and sum(lf.writes for lf in leaves) < policy.min_writes):
        return None
    per_leaf = leaf_loads(leaves)
    loads = _by_shard(leaves, per_leaf, policy.shards)
    mean = 1.0 / policy.shards
    if sum(loads) == 0 or all(abs(x - mean) <= policy.tolerance * mean for x in loads):
        return None
    src = max(range(policy.shards), key=lambda s: loads[s])
    dst = min(range(policy.shards), key=lambda s: loads[s])
    gap = loads[src] - loads[dst]
    mine = [(lf, load) for lf, load in zip(leaves, per_leaf) if lf.shard == src]
    # Not a leaf nearly as big as the gap: it would swap the two shards' loads,
    # and the next round's noise could make it qualify again, the other way.
    fits = [(lf, load) for lf, load in mine if 0 < load <= gap - policy.tolerance * mean / 2]
    movable = [(lf, load) for lf, load in fits if lf.movable]
    if movable:
        lf, load = min(movable, key=lambda p: (abs(p[1] - gap / 2), p[0].leaf))
        return Decision("move", lf.leaf,
                        reason=f"balance: shard {src} at {loads[src]:.3f} of the load, "
                               f"shard {dst} at {loads[dst]:.3f}; leaf {lf.leaf} {load:.3f}",
                        to=dst)
    if fits:
        return None     # a leaf that would do holds a frozen buffer: move it next round
    if total_leaves >= policy.max_leaves:
        return None
    big = [(lf, load) for lf, load in mine if lf.entries >= policy.min_split_entries]
    if not big:
        return None
    lf, _load = max(big, key=lambda p: (p[1], -p[0].leaf))
    return Decision("split", lf.leaf, True, "balance")
