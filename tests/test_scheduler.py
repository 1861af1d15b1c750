"""The scheduler policy is a pure function: state in, decisions out."""

from fusedb.scheduler import LeafView, Policy, ShardView, decide

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


def test_frozen_buffer_is_merged_partially_then_fully():
    [d] = decide(view(leaf(0, has_frozen=True, nsegs=1)), P)
    assert (d.action, d.leaf, d.full, d.then_split) == ("merge", 0, False, False)
    [d] = decide(view(leaf(0, has_frozen=True, nsegs=3)), P)
    assert d.full


def test_big_leaf_splits_and_frozen_big_leaf_splits_after_merge():
    [d] = decide(view(leaf(0, seg_bytes=5000)), P)
    assert (d.action, d.reason) == ("split", "leaf size")
    [d] = decide(view(leaf(0, seg_bytes=5000, has_frozen=True)), P)
    assert d.action == "merge" and d.then_split


def test_hot_leaf_splits_only_with_enough_entries():
    [d] = decide(view(leaf(0, recent_fills=3)), P)
    assert d.reason == "hot range"
    assert decide(view(leaf(0, recent_fills=3, seg_entries=5)), P) == []


def test_no_split_past_max_leaves():
    assert decide(view(leaf(0, seg_bytes=5000), nleaves=100), P) == []


def test_arena_pressure_merges_coldest_first():
    leaves = [leaf(i, has_active=True, active_fill=0.5, recent_writes=w)
              for i, w in enumerate([50, 0, 7, 3])]
    ds = decide(view(*leaves, free=1, total=10), P)
    assert [d.leaf for d in ds] == [1, 3]     # need 0.25*10 - 1 + 1 = 2 slabs
    assert all(d.reason == "arena pressure" for d in ds)
