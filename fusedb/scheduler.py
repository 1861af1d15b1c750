"""The merge scheduler's policy: a pure function from shard state to decisions.

Nothing here does I/O or touches shared memory, so the policy can be tested and
simulated on plain values. The shard worker gathers a :class:`ShardView` under
the shard lock, calls :func:`decide`, and executes what it returns.
See docs/design.md, "Scheduler".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LeafView:
    leaf: int
    has_frozen: bool        # a full buffer waits to be merged
    active_fill: float      # 0..1, 0 if the leaf has no active buffer
    has_active: bool
    nsegs: int
    seg_bytes: int          # bytes of the leaf's segment files
    seg_entries: int        # entries in the leaf's segments
    recent_fills: int       # buffers frozen within the hot window
    recent_writes: int      # mutations since the previous decision


@dataclass(frozen=True)
class ShardView:
    leaves: tuple[LeafView, ...]
    free_slabs: int
    total_slabs: int
    total_leaves: int       # in the whole database (splits stop at max_leaves)


@dataclass(frozen=True)
class Policy:
    leaf_max_bytes: int
    hot_fills: int
    min_split_entries: int
    max_segments: int
    max_leaves: int
    low_free_fraction: float


@dataclass(frozen=True)
class Decision:
    action: str   # "merge" or "split"
    leaf: int
    full: bool = True   # merge: fold every segment (True) or only add one (False)
    reason: str = ""
    then_split: bool = False   # merge: split the leaf right after (it is big or hot)


def decide(view: ShardView, policy: Policy) -> list[Decision]:
    """What to do next, most urgent first.

    1. Every frozen buffer is merged: a leaf with a frozen buffer cannot freeze
       again, so its writers stall once the active buffer fills. The merge is
       partial (the buffer becomes one more segment, write amplification 1) while
       the leaf has fewer than ``max_segments`` segments, else full.
    2. A leaf splits when its segments pass ``leaf_max_bytes``, or when it is hot
       (``hot_fills`` buffers frozen in the window) and holds at least
       ``min_split_entries`` entries; a leaf with a frozen buffer splits right
       after that buffer's merge.
    3. When free slabs fall under ``low_free_fraction`` of the arena, the coldest
       leaves holding an active buffer are merged to give their slab back.
    """
    out: list[Decision] = []
    leaves_left = policy.max_leaves - view.total_leaves
    for lf in view.leaves:
        why = ""
        if leaves_left > 0 and lf.seg_entries >= 2:
            if lf.seg_bytes > policy.leaf_max_bytes:
                why = "leaf size"
            elif lf.recent_fills >= policy.hot_fills and lf.seg_entries >= policy.min_split_entries:
                why = "hot range"
        if why:
            leaves_left -= 1
        if lf.has_frozen:
            # A split needs the leaf without a frozen buffer: under a steady write
            # load that is only true right after its merge, so split then.
            full = lf.nsegs + 1 > policy.max_segments
            out.append(Decision("merge", lf.leaf, full, "frozen buffer", then_split=bool(why)))
        elif why:
            out.append(Decision("split", lf.leaf, True, why))
    low = policy.low_free_fraction * view.total_slabs
    if view.free_slabs < low:
        busy = {d.leaf for d in out}
        cold = sorted((lf for lf in view.leaves
                       if lf.has_active and not lf.has_frozen and lf.leaf not in busy),
                      key=lambda lf: (lf.recent_writes, -lf.active_fill))
        need = int(low - view.free_slabs) + 1
        for lf in cold[:need]:
            full = lf.nsegs + 1 > policy.max_segments
            out.append(Decision("merge", lf.leaf, full, "arena pressure"))
    return out
