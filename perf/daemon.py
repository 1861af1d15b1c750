"""What the daemon costs: starting it, attaching to it, stopping it, and the
operations of a process attached to a daemon against those of the process
that owns the database itself (the router of ``open(path, shards=N)``).

    python perf/daemon.py [--rounds 5] [--ops 200000] [--shards 2]

Prints, per round, seconds for: ``connect(path, start=True)`` with no daemon
running (a cold start: a new directory, the daemon's interpreter, its workers),
``connect(path)`` to the running daemon (a warm attach), ``fusedb stop``; then
microseconds per put/get/incr (16-byte keys, 100-byte values, 10,000 keys,
fixed seed) for a process attached to the daemon and for the owning router,
alternated in one run (ratios: the machine is noisy). Medians over rounds.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import fusedb


def per_op(db, keys: list[bytes], seq: list[bytes]) -> dict[str, float]:
    """Microseconds per put, get and incr over ``seq``."""
    value = b"v" * 100
    for k in keys:
        db.put(k, value)
    out = {}
    for name, fn in (("put", lambda k: db.put(k, value)), ("get", db.get),
                     ("incr", lambda k: db.incr(k + b"#"))):
        t = time.perf_counter()
        for k in seq:
            fn(k)
        out[name] = (time.perf_counter() - t) / len(seq) * 1e6
    return out


def stop(path: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fusedb", "stop", path], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ops", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=2)
    args = ap.parse_args()
    rnd = random.Random(42)
    keys = [b"key:%012d" % rnd.randrange(10**12) for _ in range(10_000)]
    seq = [keys[rnd.randrange(len(keys))] for _ in range(args.ops)]
    rows: dict[str, list[float]] = {}

    def add(name: str, v: float) -> None:
        rows.setdefault(name, []).append(v)

    print(f"fusedb {fusedb.__version__}, compiled={fusedb.compiled}, shards={args.shards}")
    for r in range(args.rounds):
        d = tempfile.mkdtemp(prefix="fusedb-daemon-perf-")
        try:
            path = d + "/db"
            t = time.perf_counter()
            db = fusedb.connect(path, start=True, shards=args.shards)
            add("cold start + attach, s", time.perf_counter() - t)
            db.close()
            t = time.perf_counter()
            db = fusedb.connect(path)
            add("warm attach, s", time.perf_counter() - t)
            for name, us in per_op(db, keys, seq).items():
                add(f"{name}, attached to the daemon, us", us)
            db.close()
            add("fusedb stop, s", stop(path))
            own = fusedb.open(d + "/own", shards=args.shards)
            try:
                for name, us in per_op(own, keys, seq).items():
                    add(f"{name}, owning router, us", us)
            finally:
                own.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    width = max(len(k) for k in rows)
    for name, vs in rows.items():
        print(f"{name:<{width}}  median {statistics.median(vs):8.3f}   "
              f"min {min(vs):8.3f}   max {max(vs):8.3f}")
    for op in ("put", "get", "incr"):
        a = statistics.median(rows[f"{op}, attached to the daemon, us"])
        o = statistics.median(rows[f"{op}, owning router, us"])
        print(f"{op}: attached / owning = {a / o:.2f}")


if __name__ == "__main__":
    main()
