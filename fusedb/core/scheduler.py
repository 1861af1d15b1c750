"""The merge scheduler's policy: a pure function from shard state to decisions.

Nothing here does I/O or touches shared memory, so the policy can be tested and
simulated on plain values. The shard's merge loop copies the raw leaf rows
under the shard lock (``Merger.snapshot_leaves``), builds a :class:`ShardView`
from them after releasing it, calls :func:`decide`, and executes what it returns.
See docs/design.md, "Scheduler".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LeafView:
    """One leaf's state as the scheduler sees it (no lock: immutable value).
    Built by Worker.view on the shard's merge loop (embedded: its thread; else
    the worker process's main thread) from the rows Merger.snapshot_leaves
    copied under the shard lock, plus the merge loop's own fill history."""

    leaf: int
    has_frozen: bool        # a full buffer waits to be merged
    active_fill: float      # 0..1, 0 if the leaf has no active buffer
    has_active: bool
    nsegs: int
    seg_bytes: int          # bytes of the leaf's segment files
    seg_entries: int        # entries in the leaf's segments
    recent_fills: int       # buffers frozen within the hot window
    recent_writes: int      # mutations since the previous decision
    #: WAL stream position of the first record in the active buffer (the log it
    #: keeps from being deleted); -1 if the leaf has no active buffer or it is empty.
    active_wal_pos: int = -1


@dataclass(frozen=True)
class ShardView:
    """One shard's state for :func:`decide` (no lock: immutable value): its
    leaves, its arena's free and total slabs, the database's leaf count, its
    WAL files. Built by Worker.view on the shard's merge loop, once per round,
    from copies taken under the shard lock (and the meta lock for the routing
    table); ``wal_files`` comes from the shard's WAL writer."""

    leaves: tuple[LeafView, ...]
    free_slabs: int
    total_slabs: int
    total_leaves: int       # in the whole database (splits stop at max_leaves)
    #: The shard's WAL files on disk, oldest first, the current one last: (stream
    #: position of the file's first record, bytes of the file).
    wal_files: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Policy:
    """The options :func:`decide` uses (no lock: immutable value): bytes, counts
    and a fraction, as the Options fields of the same names (``max_leaves``:
    the meta block's leaf slots). Built once per shard by Worker.__init__, on
    the thread that starts the merge loop, and read by that loop only."""

    leaf_max_bytes: int
    hot_fills: int
    min_split_entries: int
    max_segments: int
    max_leaves: int
    low_free_fraction: float
    wal_max_bytes: int = 0   # bound on the shard's WAL bytes on disk; 0: none


@dataclass(frozen=True)
class Decision:
    """One thing for the merge loop to do on one leaf (no lock: immutable
    value). Returned by :func:`decide`, most urgent first, and by
    fusedb.core.balance.balance (a "move", or a "split" for balance); Worker.step
    runs a merge or split as Merger.merge_leaf on the merge loop, which takes the
    shard lock itself (O(1) snapshot and publish); a move is run by the merge
    loop of the leaf's shard (the source). ``reason`` is for logs and tests."""

    action: str   # "merge", "split" or "move"
    leaf: int
    full: bool = True   # fold every segment (a split); False: fold_count decides
    reason: str = ""
    then_split: bool = False   # merge: split the leaf right after (it is big or hot)
    to: int = -1   # move: the destination shard; -1 for a merge or split


def fold_count(sizes: list[int], buffer_bytes: int, max_segments: int) -> int:
    """How many of a leaf's segments (``sizes``, newest first) a merge of its frozen
    buffer (``buffer_bytes``) folds in: 0 is a partial merge (the buffer becomes
    one more segment), ``len(sizes)`` a full merge.

    Leaf-local size tiering: while the result would pass ``max_segments``, or
    the next older segment is no bigger than what is being merged so far, take
    it too. Small segments are folded together often and a big one only when
    as much new data has piled up above it, so an entry is rewritten about
    log2(leaf bytes / buffer bytes) times, not once per ``max_segments``
    buffers as when every overflow rewrote the whole leaf."""
    need = len(sizes) + 1 - max_segments
    if need <= 0:
        return 0
    acc, k = buffer_bytes, 0
    while k < len(sizes) and (k < need or sizes[k] <= acc):
        acc += sizes[k]
        k += 1
    return k


def wal_target(files: tuple[tuple[int, int], ...], max_bytes: int) -> int | None:
    """The WAL position every buffer must have merged below for the shard's WAL
    files on disk (``files``: (first position, bytes), oldest first, the current
    file last) to fit in ``max_bytes`` again, or None if they fit (or
    ``max_bytes`` is 0).

    Files are deleted whole and oldest first, and never the current one: the
    answer is the first position of the oldest file that must be kept, i.e. of the
    first file such that it and every newer file together fit (the current file
    if none does). Once no buffer holds a record below that position, every
    older file is deletable (``WalWriter.truncate``)."""
    total = sum(nbytes for _start, nbytes in files)
    if not max_bytes or total <= max_bytes or len(files) < 2:
        return None
    j = 0
    while j < len(files) - 1 and total > max_bytes:
        total -= files[j][1]
        j += 1
    return files[j][0]


def decide(view: ShardView, policy: Policy) -> list[Decision]:
    """What to do next, most urgent first.

    1. Every frozen buffer is merged: a leaf with a frozen buffer cannot freeze
       again, so its writers stall once the active buffer fills. How many
       segments the merge folds in is decided when it runs (:func:`fold_count`,
       which needs the segments' sizes).
    2. A leaf splits when its segments pass ``leaf_max_bytes``, or when it is hot
       (``hot_fills`` buffers frozen in the window) and holds at least
       ``min_split_entries`` entries and a sixteenth of ``leaf_max_bytes``, while
       the shard has fewer leaves than a quarter of its buffers; a leaf with a
       frozen buffer splits right after that buffer's merge. (Every leaf
       being written needs a buffer of its own. Without the leaf-count cap a
       sequential load, whose tail leaf is always hot, cut the key space into
       far more leaves than the arena has buffers, and each buffer was merged
       holding a handful of entries. Below the cap, heat splits are how a
       small database puts its whole arena to use.)
    3. When free slabs fall under ``low_free_fraction`` of the arena, the coldest
       leaves holding an active buffer are merged to give their slab back.
    4. When the shard's WAL files on disk pass ``wal_max_bytes``, every buffer
       holding a record older than the first file that must be kept
       (:func:`wal_target`) is merged (reason "wal bound"), so those files can be
       deleted. Frozen buffers are merged anyway (rule 1); an active buffer is
       merged by its own decision, after its leaf's frozen buffer if it has one
       (``merge_leaf`` then freezes and merges the active buffer). A buffer that
       never fills, a cold leaf's or one whose counters are updated in place,
       otherwise keeps every later file on disk. This is RocksDB's
       ``max_total_wal_size``: "Once WALs exceed this size, RocksDB will start
       forcing the flush of column families to allow deletion of some oldest
       WALs" (https://github.com/facebook/rocksdb/wiki/Write-Ahead-Log-(WAL),
       "WAL Configurations"); RocksDB frees one file per trigger, this frees as
       many as the bound calls for in one round.
    """
    out: list[Decision] = []
    leaves_left = policy.max_leaves - view.total_leaves
    # Every leaf that is written needs a buffer of its own: past a quarter as many
    # leaves as buffers, more leaves would spread the arena thin, so heat alone
    # splits no more (size still does).
    heat_splits = len(view.leaves) < view.total_slabs // 4
    for lf in view.leaves:
        why = ""
        if leaves_left > 0 and lf.seg_entries >= 2:
            if lf.seg_bytes > policy.leaf_max_bytes:
                why = "leaf size"
            elif (heat_splits and lf.recent_fills >= policy.hot_fills
                  and lf.seg_entries >= policy.min_split_entries
                  and lf.seg_bytes >= policy.leaf_max_bytes // 16):
                why = "hot range"
        if why:
            leaves_left -= 1
        if lf.has_frozen:
            # A split needs the leaf without a frozen buffer: under a steady write
            # load that is only true right after its merge, so split then.
            out.append(Decision("merge", lf.leaf, False, "frozen buffer", then_split=bool(why)))
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
            out.append(Decision("merge", lf.leaf, False, "arena pressure"))
    target = wal_target(view.wal_files, policy.wal_max_bytes)
    if target is not None:
        # A split or an arena-pressure merge takes the active buffer already.
        takes_active = {d.leaf for d in out if d.action == "split" or d.reason == "arena pressure"}
        for lf in view.leaves:
            if 0 <= lf.active_wal_pos < target and lf.leaf not in takes_active:
                out.append(Decision("merge", lf.leaf, False, "wal bound"))
    return out
