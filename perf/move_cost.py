"""What a leaf move between shards costs (docs/perf.md, "Shard balance").

    python perf/move_cost.py [--entries 1500] [--rounds 10]

An embedded ``shards=2`` database with its merge loops stopped; a leaf whose
active buffer holds ``--entries`` entries (11-byte keys, 60-byte values) is
moved to the other shard ``--rounds`` times (merged in between). Prints the
time both shard locks are held (``fusedb.shard.moving._move_locked``) and the
whole move's (with the staged manifest's fsyncs, outside the locks), in ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import fusedb
import fusedb.shard.moving as moving
from fusedb.testing import internals as I


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    locked: list[float] = []
    whole: list[float] = []
    inner = moving._move_locked

    def timed(*args):
        t = time.perf_counter()
        try:
            return inner(*args)
        finally:
            locked.append(time.perf_counter() - t)

    moving._move_locked = timed
    with tempfile.TemporaryDirectory() as d, \
            fusedb.open(d + "/db", shards=2, mode="embedded") as db:
        I.stop_worker(db, 0)
        I.stop_worker(db, 1)
        for _ in range(a.rounds):
            for i in range(a.entries):
                db.put(b"user:%06d" % i, b"v" * 60)
            leaf = I.leaf_of(db, b"user:000000")
            t = time.perf_counter()
            if not I.move_leaf(db, leaf, 1 - I.shard_of_leaf(db, leaf)):
                raise SystemExit("the leaf did not move (its buffer froze: fewer --entries)")
            whole.append(time.perf_counter() - t)
            I.merge_leaf(db, leaf)
    print(f"{a.entries} buffered entries, {a.rounds} moves")
    print(f"both shard locks held: median {statistics.median(locked) * 1e3:.2f} ms, "
          f"max {max(locked) * 1e3:.2f} ms")
    print(f"whole move: median {statistics.median(whole) * 1e3:.2f} ms, "
          f"max {max(whole) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
