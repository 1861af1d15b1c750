"""Cost of one rate-limit hit through `limits` (issue 13), per strategy and storage:

- ``memory://``: limits' MemoryStorage, in this process only (not shared; the floor),
- ``fusedb://``: FuseDB's storage (``import fusedb.limits``); this process is attached
  to a daemon started by ``connect(start=True, shards=1)``, as every worker of a
  web server is (the shared setting),
- ``redis://``: limits' RedisStorage through redis-py, against a redis-server this
  script starts on 127.0.0.1 (an ephemeral port; appendonly, fsync every second, as
  fusedb/tools/bench/engines.py RedisEngine starts it) and stops by its pid.

    python perf/adapters.py [--hits 200000] [--ids 1000] [--rounds 3]
                            [--redis-hits 20000] [--strategies fixed moving sliding]
                            [--storages memory fusedb redis] [--profile STRATEGY ...]
    FUSEDB_NO_EXTENSIONS=1 python perf/adapters.py ...   # the pure-Python FuseDB

Each hit is ``STRATEGIES[s](storage_from_string(uri)).hit(item, id)`` (2000/hour)
over ``--ids`` client ids in a shuffled sequence (fixed seed), ``hits / ids`` per
id, so every hit is admitted (checked) and a moving window holds at most that many
timestamps (200 × 8 bytes by default). Every round uses new ids (new keys); within
a round the storages take turns every 1/20 of the sequence (the machine is noisy);
the table shows the median over rounds of microseconds per hit, and the ratios
fusedb/memory (target ≤ 1.5) and redis/fusedb (target ≥ 10). redis:// runs
``--redis-hits`` hits over proportionally fewer ids (the same hits per id, so the
same window sizes): at about 100 µs a round trip, the full count takes minutes.

``--profile STRATEGY ...`` then runs cProfile over one more round of fusedb:// hits
of each strategy named and prints the top functions by internal time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from limits import RateLimitItemPerHour
from limits.storage import storage_from_string
from limits.strategies import STRATEGIES

import fusedb
import fusedb.limits  # noqa: F401  (registers the fusedb:// storage scheme)
from fusedb.tools.bench.engines import RedisEngine

STRATEGY_NAMES = {"fixed": "fixed-window", "moving": "moving-window",
                  "sliding": "sliding-window-counter"}
LIMIT = 2000   # per hour
CHUNKS = 20    # parts of a round's sequence; the storages take turns part by part


def item(strategy: str) -> RateLimitItemPerHour:
    """The limit, in a namespace of the strategy's own: a fixed-window counter and a
    moving-window list must not share a key in one storage."""
    return RateLimitItemPerHour(LIMIT, namespace=f"LIMITER-{strategy}")


def sequence(hits: int, ids: int, seed: int) -> list[str]:
    """``hits`` client ids, each of ``ids`` ids ``hits // ids`` times, shuffled."""
    seq = [f"10.{seed}.{i // 256}.{i % 256}" for i in range(ids)] * (hits // ids)
    random.Random(seed).shuffle(seq)
    return seq


def time_hits(limiter, limit: RateLimitItemPerHour, seq: list[str]) -> float:
    """Seconds for ``limiter.hit`` of ``limit`` over ``seq``; every hit must be
    admitted."""
    hit = limiter.hit
    admitted = 0
    t = time.perf_counter()
    for key in seq:
        admitted += hit(limit, key)
    elapsed = time.perf_counter() - t
    assert admitted == len(seq), f"{len(seq) - admitted} hits refused: the limit is too low"
    return elapsed


def run_round(limiters: dict, seqs: dict[str, list[str]]) -> dict[tuple[str, str], float]:
    """One round: every limiter's sequence (``seqs[storage]``) in CHUNKS parts, the
    limiters taking turns part by part, so a change in the machine's load touches
    them alike. Microseconds per hit of each limiter."""
    spent = dict.fromkeys(limiters, 0.0)
    for c in range(CHUNKS):
        for (st, s), limiter in limiters.items():
            seq = seqs[st]
            part = seq[c * len(seq) // CHUNKS:(c + 1) * len(seq) // CHUNKS]
            spent[st, s] += time_hits(limiter, item(s), part)
    return {(st, s): t / len(seqs[st]) * 1e6 for (st, s), t in spent.items()}


def warm_up(limiter, limit: RateLimitItemPerHour) -> None:
    """A few hundred hits on keys of their own (imports, caches, connections)."""
    for key in sequence(400, 200, 255):
        limiter.hit(limit, key)


def profile(limiter, limit: RateLimitItemPerHour, seq: list[str], top: int = 20) -> None:
    prof = cProfile.Profile()
    prof.enable()
    time_hits(limiter, limit, seq)
    prof.disable()
    stats = pstats.Stats(prof)
    calls = stats.total_calls / len(seq)    # type: ignore[attr-defined]
    print(f"\ncProfile, {len(seq)} fusedb:// hits, {limit.namespace}: "
          f"{calls:.1f} Python calls per hit")
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--hits", type=int, default=200_000, help="timed hits per round")
    ap.add_argument("--ids", type=int, default=1000, help="client ids (keys) per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--redis-hits", type=int, default=20_000,
                    help="timed hits per round for redis:// (a prefix of the sequence)")
    ap.add_argument("--strategies", nargs="+", choices=STRATEGY_NAMES,
                    default=list(STRATEGY_NAMES))
    ap.add_argument("--storages", nargs="+", choices=["memory", "fusedb", "redis"],
                    default=["memory", "fusedb", "redis"])
    ap.add_argument("--profile", nargs="+", choices=STRATEGY_NAMES, default=[],
                    help="cProfile fusedb:// hits of these strategies after the timing")
    args = ap.parse_args()
    assert args.hits // args.ids <= LIMIT, "more hits per id than the limit"

    tmp = tempfile.mkdtemp(prefix="fusedb-adapters-perf-")
    path, redis = os.path.join(tmp, "db"), None
    uris = {"memory": "memory://", "fusedb": f"fusedb://{path}"}
    try:
        if "fusedb" in args.storages:
            fusedb.connect(path, start=True, shards=1).close()
        if "redis" in args.storages:
            redis = RedisEngine()
            redis.open(os.path.join(tmp, "redis"), None)
            uris["redis"] = f"redis://127.0.0.1:{redis.port}"
        limiters = {(st, s): STRATEGIES[STRATEGY_NAMES[s]](storage_from_string(uris[st]))
                    for st in args.storages for s in args.strategies}
        for (_, s), limiter in limiters.items():
            warm_up(limiter, item(s))
        us: dict[tuple[str, str], list[float]] = {k: [] for k in limiters}
        redis_ids = max(1, args.ids * args.redis_hits // args.hits)
        for r in range(args.rounds):
            seq = sequence(args.hits, args.ids, r)
            seqs = {"memory": seq, "fusedb": seq,
                    "redis": sequence(args.redis_hits, redis_ids, r)}
            for k, v in run_round(limiters, seqs).items():
                us[k].append(v)
        report(args, us)
        for s in args.profile:
            profile(limiters["fusedb", s], item(s), sequence(args.hits, args.ids, 254))
    finally:
        if redis is not None:
            redis.close()
        if "fusedb" in args.storages:
            subprocess.run([sys.executable, "-m", "fusedb", "stop", path],
                           stdout=subprocess.DEVNULL, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def report(args, us: dict[tuple[str, str], list[float]]) -> None:
    print(f"fusedb {fusedb.__version__}, compiled={fusedb.compiled}; limit {LIMIT}/hour, "
          f"{args.hits} hits over {args.ids} ids (redis: {args.redis_hits} over "
          f"{max(1, args.ids * args.redis_hits // args.hits)}), "
          f"median of {args.rounds} rounds; load average {os.getloadavg()[0]:.1f}")
    med = {k: statistics.median(v) for k, v in us.items()}
    cols = [st for st in ("memory", "fusedb", "redis") if st in args.storages]
    ratios = [("fusedb/memory", "fusedb", "memory", "<= 1.5"),
              ("redis/fusedb", "redis", "fusedb", ">= 10")]
    ratios = [r for r in ratios if r[1] in cols and r[2] in cols]
    print("| strategy | " + " | ".join(f"{c}:// µs/hit" for c in cols)
          + "".join(f" | {name} (target {t})" for name, _, _, t in ratios) + " |")
    print("|---|" + "--:|" * (len(cols) + len(ratios)))
    for s in args.strategies:
        cells = [f"{med[c, s]:.1f}" for c in cols]
        cells += [f"{med[a, s] / med[b, s]:.2f}" for _, a, b, _ in ratios]
        print(f"| {STRATEGY_NAMES[s]} | " + " | ".join(cells) + " |")
    print("rounds (µs/hit): " + "; ".join(
        f"{st} {s} " + "/".join(f"{x:.1f}" for x in v) for (st, s), v in us.items()))


if __name__ == "__main__":
    main()
