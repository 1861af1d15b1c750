"""The scheduler policy is a pure function: state in, decisions out."""

from fusedb.core.scheduler import LeafView, Policy, ShardView, decide, fold_count

P = Policy(leaf_max_bytes=1000, hot_fills=3, min_split_entries=10, max_segments=3,
           max_leaves=100, low_free_fraction=0.25)


def leaf(i, **kw):
    base = dict(leaf=i, has_frozen=False, active_fill=0.0, has_active=False, nsegs=1,
                seg_bytes=100, seg_entries=50, recent_fills=0, recent_writes=0)
    base.update(kw)
    return LeafView(**base)


def view(*leaves, free=10, total=10, nleaves=None):
    return ShardView(tuple(leaves), free, total, nleaves or len(leaves))


def test_idle_shard_does_nothing():
    assert decide(view(leaf(0), leaf(1)), P) == []


def test_frozen_buffer_is_merged_and_the_fold_is_left_to_merge_time():
    for nsegs in (1, 3):
        [d] = decide(view(leaf(0, has_frozen=True, nsegs=nsegs)), P)
        assert (d.action, d.leaf, d.full, d.then_split) == ("merge", 0, False, False)


def test_fold_count_partial_until_the_limit():
    assert fold_count([], 10, 3) == 0
    assert fold_count([10, 100], 10, 3) == 0
    assert fold_count([10, 10, 10], 10, 1) == 3      # max_segments=1: always everything


def test_fold_count_tiers_small_segments_before_big_ones():
    # 3 segments, limit 3: one must go; the next ones follow while not bigger
    # than the pile so far.
    assert fold_count([10, 10, 1000], 10, 3) == 2
    assert fold_count([10, 30, 1000], 10, 3) == 1
    assert fold_count([40, 50, 1000], 60, 3) == 2
    assert fold_count([40, 50, 100], 60, 3) == 3     # the oldest too: a full merge
    # A leaf growing by 1000 buffers, max_segments=4: bytes written per byte
    # buffered, against folding everything whenever the limit is passed.
    def grow(pick):
        sizes, written = [], 0
        for _ in range(1000):
            k = pick(sizes)
            new = 1 + sum(sizes[:k])
            written += new
            sizes = [new] + sizes[k:]
            assert len(sizes) <= 4
        return written / 1000
    tiered = grow(lambda sizes: fold_count(sizes, 1, 4))
    whole = grow(lambda sizes: len(sizes) if len(sizes) + 1 > 4 else 0)
    assert tiered < 20 and whole > 100      # measured: 16.4 and 125.5


def test_big_leaf_splits_and_frozen_big_leaf_splits_after_merge():
    [d] = decide(view(leaf(0, seg_bytes=5000)), P)
    assert (d.action, d.reason) == ("split", "leaf size")
    [d] = decide(view(leaf(0, seg_bytes=5000, has_frozen=True)), P)
    assert d.action == "merge" and d.then_split


def test_hot_leaf_splits_only_with_enough_entries_and_bytes():
    [d] = decide(view(leaf(0, recent_fills=3, seg_bytes=500)), P)
    assert d.reason == "hot range"
    assert decide(view(leaf(0, recent_fills=3, seg_bytes=500, seg_entries=5)), P) == []
    # under a sixteenth of leaf_max_bytes: too small to split for heat
    assert decide(view(leaf(0, recent_fills=3, seg_bytes=61)), P) == []
    assert decide(view(leaf(0, recent_fills=3, seg_bytes=62)), P) != []


def test_heat_splits_stop_at_a_quarter_as_many_leaves_as_buffers():
    hot = [leaf(i, recent_fills=3, seg_bytes=500) for i in range(3)]
    assert len(decide(view(*hot, free=16, total=16), P)) == 3      # 3 < 16 // 4
    assert decide(view(*hot, free=12, total=12), P) == []          # 3 >= 12 // 4
    big = [leaf(i, seg_bytes=5000) for i in range(3)]
    assert [d.reason for d in decide(view(*big, free=12, total=12), P)] == ["leaf size"] * 3


def test_no_split_past_max_leaves():
    assert decide(view(leaf(0, seg_bytes=5000), nleaves=100), P) == []


def test_arena_pressure_merges_coldest_first():
    leaves = [leaf(i, has_active=True, active_fill=0.5, recent_writes=w)
              for i, w in enumerate([50, 0, 7, 3])]
    ds = decide(view(*leaves, free=1, total=10), P)
    assert [d.leaf for d in ds] == [1, 3]     # need 0.25*10 - 1 + 1 = 2 slabs
    assert all(d.reason == "arena pressure" for d in ds)
