"""``fusedb demo``: a rate limiter and a session store on a database, in one
process (embedded) or with shard worker and client processes."""

from __future__ import annotations

import random
import sys
import time

from fusedb import open as open_db
from fusedb.core import kernel


def _rate_limit(args) -> tuple[int, int, float]:
    """Serve ``ops`` requests of a fixed-window rate limiter (100 per minute per
    user); runs in a pool process on the pickled (re-attached) handle."""
    db, ops, seed = args
    rnd = random.Random(seed)
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
    return allowed, denied, time.perf_counter() - t


def demo(path: str, ops: int, shards: int, processes: int) -> int:
    """Run the demo on the database at ``path`` (``shards`` 0: embedded; else
    ``processes`` client processes); the exit status: 0 done, 1 the database
    could not be opened (one line on stderr)."""
    how = (f"multiprocess: {shards} shard worker processes, {processes} client processes"
           if shards else "embedded, one process")
    from fusedb import connect
    from fusedb.errors import FuseDBError, LockedError, NotRunningError
    attached = False
    try:
        db = open_db(path, shards=shards) if shards else open_db(path)
    except LockedError:
        try:
            db = connect(path)        # a daemon (fusedb serve) runs it: attach
        except NotRunningError as e:
            print(f"fusedb demo: {path} is open in another process and cannot be "
                  f"attached to: {e}", file=sys.stderr)
            return 1
        how, attached = "attached to the process that owns it (fusedb serve)", True
    except (FuseDBError, OSError) as e:
        print(f"fusedb demo: cannot open {path}: {e}", file=sys.stderr)
        return 1
    with db:                    # closed also when a print fails (a closed pipe)
        print(f"FuseDB demo on {path!r} ({how}; {kernel.describe()})")
        runs = db.incr(b"demo:runs")
        print(f"  this directory has seen {runs} demo run(s) (a counter that survives close)")
        db.put(b"session:alice", b'{"user": "alice", "cart": 3}', ttl=30)
        print(f"  session:alice -> {db.get(b'session:alice')!r}, "
              f"ttl {db.ttl(b'session:alice'):.1f}s")
        if shards and processes > 1:
            import multiprocessing
            jobs = [(db, ops // processes, 7 + i) for i in range(processes)]
            with multiprocessing.get_context("spawn").Pool(processes) as pool:
                results = pool.map(_rate_limit, jobs)
        else:
            results = [_rate_limit((db, ops, 7))]
        dt = max(r[2] for r in results)     # the processes run side by side
        allowed = sum(r[0] for r in results)
        denied = sum(r[1] for r in results)
        total = allowed + denied
        print(f"  fixed-window rate limiter: {total} requests in {dt:.2f}s "
              f"({total / dt:,.0f} req/s), {allowed} allowed, {denied} denied")
        top = sorted(((int(v), k) for k, v in db.scan(prefix=b"rl:")), reverse=True)[:3]
        print("  busiest windows:", ", ".join(f"{k.decode()}={n}" for n, k in top))
        s = db.stats()
        print(f"  stats: {s['leaves']} leaves, {s['segments']} segments, {s['merges']} merges, "
              f"{s['splits']} splits, arena {s['arena_slabs_used']}/{s['arena_slabs_total']} slabs")
        for w in s["workers"]:
            print(f"  shard {w['shard']}: worker pid {w['pid']}, "
                  f"{w.get('cpu_seconds', 0):.2f} s CPU, "
                  f"{w.get('rss_bytes', 0) / 2**20:.0f} MiB RSS")
    print("  closed cleanly; run it again to see the counter survive."
          if not attached else "  detached; the database stays with its owner.")
    return 0
