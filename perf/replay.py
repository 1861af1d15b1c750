"""Recovery speed: time to open a database whose WAL holds N records after a crash.

    python perf/replay.py [--records 1000000] [--keys 100000]

Writes N puts (16-byte keys, 100-byte values, fixed seed) with durability "none",
simulates the process dying (threads stopped, shared memory left in /dev/shm,
nothing flushed), then times fusedb.open(): ring salvage + WAL read + vectorised
replay into segments + manifest.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

import fusedb
from fusedb.wal.reader import list_files


def crash(db) -> None:
    store = db._store
    for w in store.workers:
        w.stopping.set()
        w.wakeup.set()
        w.join()
    store.workers = []
    for f in store.wal_writers:
        f.write_out(fsync=False)
        f.stopping.set()
        f.kick.set()
        f.join()
        os.close(f.fd)
        f.fd = -1
    store.wal_writers = []
    store.release_shm(unlink=False)
    store.lockfile.release()
    db._closed = True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    args = ap.parse_args()
    rnd = random.Random(42)
    keys = [b"key:%012d" % rnd.randrange(10**12) for _ in range(args.keys)]
    value = b"v" * 100
    d = tempfile.mkdtemp(prefix="fusedb-replay-")
    try:
        # Big buffers and ring: nothing merges, so every record must be replayed.
        opts = dict(durability="none", buffer_bytes=4 << 20, buffer_slots=32768,
                    arena_bytes=256 << 20, leaf_max_bytes=1 << 40, wal_ring_bytes=64 << 20,
                    hot_fills=10**9)
        db = fusedb.open(d, **opts)
        t = time.perf_counter()
        for i in range(args.records):
            db.put(keys[i % len(keys)], value)
        write_s = time.perf_counter() - t
        merges = db.stats()["merges"]
        crash(db)
        wal_bytes = sum(os.path.getsize(p) for v in list_files(d).values() for _n, p in v)
        t = time.perf_counter()
        db = fusedb.open(d)
        open_s = time.perf_counter() - t
        replayed = db._store.replayed
        assert db.get(keys[0]) == value
        db.close()
    finally:
        shutil.rmtree(d)
    print(f"records written {args.records:,} in {write_s:.2f}s (merges during load: {merges})")
    print(f"WAL on disk before salvage: {wal_bytes / 1e6:.1f} MB")
    print(f"open after crash: {open_s:.2f}s, {replayed:,} mutations replayed "
          f"({replayed / open_s / 1e6:.2f} M records/s)")
    sys.exit(0)


if __name__ == "__main__":
    main()
