"""stats()["shards"]: each shard's keys, bytes and writes (fusedb.api.stats), on a
real two-shard database whose keys are split over both shards with split_keys."""

from __future__ import annotations

import pytest

import fusedb
from fusedb.testing import TINY
from fusedb.tools import control
from mp_helpers import Client

#: split_keys=["m"]: leaf [b"", b"m") in shard 0, leaf [b"m", ...) in shard 1.
OPTS = dict(TINY, shards=2, split_keys=["m"])


def load(db) -> tuple[list[int], list[dict[bytes, bytes]]]:
    """Writes to both shards (puts, overwrites, incr, deletes of present keys);
    returns the mutations done per shard and each shard's live keys -> value."""
    done = [0, 0]
    live: list[dict[bytes, bytes]] = [{}, {}]

    def put(shard, key, value):
        db.put(key, value)
        done[shard] += 1
        live[shard][key] = value

    for i in range(300):
        put(0, b"a:%d" % i, b"x" * 40)
    for i in range(0, 300, 3):
        put(0, b"a:%d" % i, b"y" * 60)                  # overwrites
    for _ in range(10):
        for i in range(20):
            db.incr(b"c:%d" % i)
            done[0] += 1
    live[0].update({b"c:%d" % i: b"10" for i in range(20)})
    for i in range(200):
        put(1, b"s:%03x" % i, b"z" * 150)
    for i in range(0, 200, 4):
        db.delete(b"s:%03x" % i)
        done[1] += 1
        del live[1][b"s:%03x" % i]
    assert not db.delete(b"s:zzz")       # nothing to delete: not a mutation
    return done, live


def check(rows: list[dict], done: list[int], live: list[dict[bytes, bytes]]) -> None:
    for row, n, keys in zip(rows, done, live):
        assert row["writes"] == n
        # Each live key is held somewhere; a key held in two places (a buffer
        # and a segment, two segments) or a tombstone not merged yet counts
        # more, never more than once per mutation.
        assert len(keys) <= row["keys"] <= n
        assert row["bytes"] >= sum(len(k) + len(v) for k, v in keys.items()) > 0


@pytest.mark.parametrize("mode", ["embedded", "multiprocess"])
def test_each_shard_counts_its_keys_bytes_and_writes(tmp_path, mode):
    path = str(tmp_path / "db")
    with fusedb.open(path, mode=mode, **OPTS) as db:
        before = db.stats()["shards"]
        assert [(r["keys"], r["bytes"], r["writes"]) for r in before] == [(0, 0, 0)] * 2
        done, live = load(db)
        s = db.stats()
        assert s["leaves"] >= 3       # TINY buffers: merges, and splits, ran meanwhile
        check(s["shards"], done, live)
        db.flush()                    # everything in segments now
        s = db.stats()
        check(s["shards"], done, live)
        assert sum(r["bytes"] for r in s["shards"]) == s["segment_bytes"]
        # ``fusedb stats`` prints one line per shard with them.
        for r in s["shards"]:
            assert f"shard {r['shard']}: bytes {r['bytes']}, keys {r['keys']}, " \
                   f"leaves {r['leaves']}," in "\n".join(control.table(s))
            assert f", writes {r['writes']}" in "\n".join(control.table(s))
        if mode == "multiprocess":
            # A client that has read nothing (no segment open yet) sees the same.
            c = Client(path)
            try:
                seen = c("stats")["shards"]
                assert [(r["keys"], r["bytes"], r["writes"]) for r in seen] == \
                    [(r["keys"], r["bytes"], r["writes"]) for r in s["shards"]]
            finally:
                c.close()
