"""Per-operation cost of put / get / incr in one process (default sizes).

    python perf/hotpath.py [--keys 10000] [--ops 200000] [--profile] [--shards N]

Without --shards the database runs embedded (merges in a thread of this
process); with --shards N it runs multiprocess and this process is the router,
operating on shared memory as any attached client does (merges in N worker
processes).

Prints microseconds per operation, and whether the compiled kernel ran
(``FUSEDB_NO_EXTENSIONS=1`` runs the pure-Python path). Keys are 16 bytes,
values 100 bytes, fixed seed.
Data stays in buffers and segments as the default sizes dictate (merges run in the
background thread while the loop runs).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import shutil
import tempfile
import time

import fusedb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--ops", type=int, default=200_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--shards", type=int, default=0, help="multiprocess with N workers")
    args = ap.parse_args()
    rnd = random.Random(42)
    keys = [b"key:%012d" % rnd.randrange(10**12) for _ in range(args.keys)]
    seq = [keys[rnd.randrange(len(keys))] for _ in range(args.ops)]
    value = b"v" * 100
    d = tempfile.mkdtemp(prefix="fusedb-hotpath-")
    db = fusedb.open(d, shards=args.shards) if args.shards else fusedb.open(d)
    try:
        for k in keys:
            db.put(k, value)
        results = {}
        for name, fn in (("put", lambda k: db.put(k, value)), ("get", db.get),
                         ("incr", lambda k: db.incr(k + b"#"))):
            for k in seq[:2000]:
                fn(k)
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
            t = time.perf_counter()
            for k in seq:
                fn(k)
            dt = time.perf_counter() - t
            if args.profile:
                prof.disable()
                print(f"--- {name}")
                pstats.Stats(prof).sort_stats("tottime").print_stats(8)
            results[name] = dt / len(seq) * 1e6
        db.flush()
        for k in keys[:1000]:
            db.get(k)
        t = time.perf_counter()
        for k in seq:
            db.get(k)
        results["get (from segments)"] = (time.perf_counter() - t) / len(seq) * 1e6
        st = db.stats()
        print({k: st[k] for k in ("compiled", "leaves", "segments", "merges", "splits",
                                  "write_stalls", "buffer_freezes", "write_amplification")})
    finally:
        db.close()
        shutil.rmtree(d)
    for name, us in results.items():
        print(f"{name:22s} {us:6.2f} us/op")


if __name__ == "__main__":
    main()
