"""The ``fusedb`` command.

    fusedb demo [PATH]    a small rate-limiter/session demo on PATH (default ./fusedb-data)
    fusedb check PATH     verify every file of a closed database; exit 1 on damage
    fusedb dump PATH      print manifest, segments and WAL records
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

from . import open as open_db


def demo(path: str, ops: int) -> int:
    rnd = random.Random(7)
    print(f"FuseDB demo on {path!r}")
    with open_db(path) as db:
        runs = db.incr(b"demo:runs")
        print(f"  this directory has seen {runs} demo run(s) (a counter that survives close)")
        db.put(b"session:alice", b'{"user": "alice", "cart": 3}', ttl=30)
        print(f"  session:alice -> {db.get(b'session:alice')!r}, ttl {db.ttl(b'session:alice'):.1f}s")
        limit, allowed, denied = 100, 0, 0
        t = time.perf_counter()
        for _ in range(ops):
            user = b"user:%d" % min(int(rnd.paretovariate(1.2)), 500)
            window = b"rl:%s:%d" % (user, int(time.time()) // 60)
            n = db.incr(window)
            if n == 1:
                db.expire(window, 60)
            if n <= limit:
                allowed += 1
            else:
                denied += 1
        dt = time.perf_counter() - t
        print(f"  fixed-window rate limiter: {ops} requests in {dt:.2f}s "
              f"({ops / dt:,.0f} req/s), {allowed} allowed, {denied} denied")
        top = sorted(((int(v), k) for k, v in db.scan(prefix=b"rl:")), reverse=True)[:3]
        print("  busiest windows:", ", ".join(f"{k.decode()}={n}" for n, k in top))
        s = db.stats()
        print(f"  stats: {s['leaves']} leaves, {s['segments']} segments, {s['merges']} merges, "
              f"{s['splits']} splits, arena {s['arena_slabs_used']}/{s['arena_slabs_total']} slabs")
    print("  closed cleanly; run it again to see the counter survive.")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusedb", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run a small demo on an embedded database")
    d.add_argument("path", nargs="?", default="fusedb-data")
    d.add_argument("--ops", type=int, default=100_000)
    c = sub.add_parser("check", help="verify every file of a closed database")
    c.add_argument("path")
    u = sub.add_parser("dump", help="print manifest, segments and WAL records")
    u.add_argument("path")
    args = ap.parse_args(argv)
    if args.cmd == "demo":
        return demo(args.path, args.ops)
    from . import check as check_mod
    if not os.path.isdir(args.path):
        print(f"fusedb: {args.path}: not a directory", file=sys.stderr)
        return 2
    if args.cmd == "check":
        problems = check_mod.check(args.path)
        for p in problems:
            print(p)
        print("ok" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    for line in check_mod.dump(args.path):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
