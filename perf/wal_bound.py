"""WAL bytes on disk for the two inputs of issue 9, item 1 (a cold key next to
session overwrites; one counter incremented in place).

    python perf/wal_bound.py [--shards N] [--wal-max-bytes B]

Opens with the issue's options (plus ``buffer_slots=256``: the issue's 64 KiB
buffer is refused with the default 2048 slots), then

* sessions: one ``put(b"config:x", b"1")``, then 60,000 puts of 600-byte values
  spread over 5,000 ``b"sess:%d"`` keys;
* counter: 300,000 ``incr(b"counter")``.

Prints, for each, the peak of the WAL files' bytes (directory listing every
1,000 operations), the WAL and segment bytes at the end, merges and write
amplification. ``--shards N`` runs multiprocess (worker processes write the WAL).
Runs on FuseDB before the bound too (its stats then show "n/a").
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import fusedb

MiB = 1 << 20
OPTIONS = dict(split_keys=[b"m"], arena_bytes=4 * MiB, buffer_bytes=64 << 10,
               wal_file_bytes=256 << 10, buffer_slots=256)


def file_bytes(path: str, prefix: str) -> int:
    n = 0
    for name in os.listdir(path):
        if name.startswith(prefix):
            try:
                n += os.path.getsize(os.path.join(path, name))
            except FileNotFoundError:      # deleted meanwhile by the worker
                pass
    return n


def run(name: str, ops, extra: dict) -> None:
    path = tempfile.mkdtemp(prefix="fusedb-walbound-")
    try:
        db = fusedb.open(path, **OPTIONS, **extra)
        peak = 0
        for i, op in enumerate(ops):
            op(db)
            if i % 1000 == 0:
                peak = max(peak, file_bytes(path, "wal-"))
        time.sleep(0.5)       # let the WAL writer and the worker finish their round
        wal = file_bytes(path, "wal-")
        st = db.stats()
        mib = lambda v: f"{v / MiB:.1f}" if v is not None else "n/a"   # noqa: E731
        print(f"{st['mode']:12s} {name:9s} WAL peak {max(peak, wal) / MiB:5.1f} MiB, at the end "
              f"{wal / MiB:5.1f} MiB (stats: {mib(st.get('wal_bytes'))}), segments "
              f"{file_bytes(path, 'seg-') / MiB:5.1f} MiB, merges {st['merges']}, WA "
              f"{st['write_amplification']:.2f}, bound "
              f"{mib(st['shards'][0].get('wal_max_bytes'))} MiB")
        db.close()
    finally:
        shutil.rmtree(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=0, help="multiprocess with N shards")
    ap.add_argument("--wal-max-bytes", type=int, default=None)
    a = ap.parse_args()
    extra = {"shards": a.shards} if a.shards else {}
    if a.wal_max_bytes is not None:
        extra["wal_max_bytes"] = a.wal_max_bytes
    value = bytes(595)
    run("sessions", [lambda db: db.put(b"config:x", b"1")] +
        [lambda db, i=i: db.put(b"sess:%d" % (i % 5000), b"%05d" % i + value)
         for i in range(60_000)], extra)
    run("counter", [lambda db: db.incr(b"counter")] * 300_000, extra)


if __name__ == "__main__":
    main()
