"""Merge throughput of a multiprocess FuseDB with 2 worker processes vs 1.

    python perf/parallel_merge.py [--keys 700000] [--value-size 100] [--rounds 5]
                                  [--updates 20000] [--repeat 3] [--pin] [--seed 42]
                                  [--json FILE]

What is measured: the time the shard workers take to merge buffers into
segment files, and nothing else. Writers (Python ``put`` calls) and workers
share the machine's cores, so timing a write load would measure the writer as
much as the merges. Instead each run does:

1. Load (untimed): a fresh database, ``fusedb.open(dir, shards=W)``, gets
   ``--keys`` random 16-byte keys (first byte uniform over 0..255, so both
   shards of W=2 get half) with ``--value-size`` byte values; ``flush()``; then
   ``os.sync()`` so the load's page-cache writeback does not spill into the
   timed part.
2. ``--rounds`` times: overwrite ``--updates`` random existing keys (untimed;
   buffers are sized so that no buffer fills, hence no merge runs meanwhile,
   checked with stats()), then time ``db.flush()``: every worker merges each
   leaf's buffer with that leaf's segment and writes the leaf's new segment.
   The router only polls (every 2 ms) while it waits, so the workers have the
   cores to themselves.

The database uses ``max_segments=1``, so every merge is a full one: the buffer
is merged with the leaf's existing segment and the whole leaf is rewritten,
and each flush rewrites the entire data set (with the default of 4, three
flushes in four would only append the small buffer as one more segment). Hot
splits are switched off (``hot_fills`` huge) so the leaf layout stays the same
across rounds; leaves still split by size while loading. durability="none".

Each run also checks that a sample of keys reads back the last value written,
and after close that no worker process and no /dev/shm object is left.

Table (one row per worker count; 1 and 2 workers alternate, ``--repeat`` fresh
databases each; MB/s is the median, the other columns are those of the run
with the median MB/s):

  merged MB     segment bytes written by the timed flushes (stats()
                "segment_bytes_written" delta), all rounds of the run
  timed s       wall time of those flushes;  MB/s = merged MB / timed s
  merges        merges in the timed flushes (leaves x rounds when isolated)
  bg merges     merges that ran while a round's writes were made: should be 0
                (else a buffer filled: lower --updates)
  worker CPU s  CPU seconds of each worker process in the timed flushes
  worker util   their sum / (timed s x workers): under 100% a worker waited
                (fsync, disk, or for a core)
  machine busy  non-idle CPU time of the whole machine / (timed s x cpus):
                shows other load (and kernel I/O threads) competing
  x vs 1w       median MB/s / the 1-worker median MB/s
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fusedb
from fusedb.shm.region import SHM_DIR, tag_for

MiB = 1 << 20
DB_OPTIONS = {"durability": "none", "max_segments": 1, "hot_fills": 10**9,
              "buffer_bytes": 1 * MiB, "buffer_slots": 8192, "arena_bytes": 64 * MiB}


def worker_cpu(stats: dict) -> list[float]:
    return [w.get("cpu_seconds", float("nan")) for w in stats["workers"]]


def busy_seconds() -> float:
    """CPU seconds the whole machine (every process, the kernel) spent not idle."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq


def shm_names(tag: str) -> list[str]:
    return [n for n in os.listdir(SHM_DIR) if f"fusedb-{tag}-" in n]


def value_for(rnd: int, size: int) -> bytes:
    """The value every key written in round ``rnd`` gets (0 = the load)."""
    return bytes([65 + rnd % 26]) * size


def run_once(workers: int, keys: list[bytes], args) -> dict:
    """One fresh database with ``workers`` shard worker processes; see the docstring."""
    rng = np.random.default_rng(args.seed + 1)   # the same updates for every run
    last = np.zeros(len(keys), np.int64)         # round of each key's last write
    tmp = tempfile.mkdtemp(prefix="fusedb-parallel-merge-")
    tag = tag_for(tmp)
    db = None
    pids: list[int] = []
    try:
        db = fusedb.open(tmp, shards=workers, pin=args.pin, **DB_OPTIONS)
        pids = [w["pid"] for w in db.stats()["workers"]]
        t0 = time.perf_counter()
        val = value_for(0, args.value_size)
        for k in keys:
            db.put(k, val)
        db.flush()
        load_s = time.perf_counter() - t0
        os.sync()
        timed = busy = merged = merges = splits = bg_merges = 0
        cpu = np.zeros(workers)
        for rnd in range(1, args.rounds + 1):
            s0 = db.stats()
            val = value_for(rnd, args.value_size)
            idx = rng.integers(0, len(keys), args.updates)
            for i in idx:
                db.put(keys[i], val)
            last[idx] = rnd
            s1 = db.stats()
            t, b = time.perf_counter(), busy_seconds()
            db.flush()
            timed += time.perf_counter() - t
            busy += busy_seconds() - b
            s2 = db.stats()
            bg_merges += s1["merges"] - s0["merges"]
            merges += s2["merges"] - s1["merges"]
            splits += s2["splits"] - s1["splits"]
            merged += s2["segment_bytes_written"] - s1["segment_bytes_written"]
            cpu += np.subtract(worker_cpu(s2), worker_cpu(s1))
        leaves = db.stats()["leaves"]
        sample = rng.choice(len(keys), min(len(keys), 5000), replace=False)
        bad = sum(db.get(keys[i]) != value_for(int(last[i]), args.value_size) for i in sample)
        if bad:
            raise AssertionError(f"{bad} of {len(sample)} sampled keys read back a wrong value")
    finally:
        try:
            if db is not None:
                db.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    alive = [p for p in pids if psutil.pid_exists(p)]
    leaked = shm_names(tag)
    if alive or leaked:
        raise RuntimeError(f"after close: worker processes still running {alive}, "
                           f"/dev/shm objects left {leaked}")
    return {"workers": workers, "keys": len(keys), "leaves": leaves, "load_s": load_s,
            "timed_s": timed, "merged_bytes": merged, "mb_per_s": merged / timed / 1e6,
            "merges": merges, "splits": splits, "background_merges": bg_merges,
            "worker_cpu_s": cpu.tolist(), "cpu_util": float(cpu.sum() / (timed * workers)),
            "machine_busy": busy / (timed * psutil.cpu_count())}


def summarize(runs: list[dict]) -> dict:
    """The run with the median throughput, plus the spread of all of them."""
    ranked = sorted(runs, key=lambda r: r["mb_per_s"])
    med = dict(ranked[(len(ranked) - 1) // 2])
    med["mb_per_s_median"] = statistics.median(r["mb_per_s"] for r in runs)
    med["mb_per_s_all"] = [round(r["mb_per_s"], 1) for r in runs]
    return med


def print_table(summary: dict[int, dict]) -> None:
    head = ("workers", "keys", "leaves", "merged MB", "timed s", "MB/s", "merges",
            "bg merges", "worker CPU s", "worker util", "machine busy", "x vs 1w",
            "MB/s of each repeat")
    base = summary[1]["mb_per_s_median"]
    rows = []
    for w, s in sorted(summary.items()):
        rows.append((w, s["keys"], s["leaves"], f"{s['merged_bytes'] / 1e6:.0f}",
                     f"{s['timed_s']:.2f}", f"{s['mb_per_s_median']:.0f}", s["merges"],
                     s["background_merges"], "+".join(f"{c:.2f}" for c in s["worker_cpu_s"]),
                     f"{s['cpu_util']:.0%}", f"{s['machine_busy']:.0%}",
                     f"{s['mb_per_s_median'] / base:.2f}",
                     " ".join(f"{m:.0f}" for m in s["mb_per_s_all"])))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        print("  ".join(str(x).rjust(n) for x, n in zip(row, widths)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=700_000, help="keys loaded (default 700000)")
    ap.add_argument("--value-size", type=int, default=100, help="bytes per value")
    ap.add_argument("--rounds", type=int, default=5, help="timed flushes per run")
    ap.add_argument("--updates", type=int, default=20_000,
                    help="keys overwritten before each timed flush")
    ap.add_argument("--repeat", type=int, default=3, help="runs per worker count")
    ap.add_argument("--pin", action="store_true", help="pin worker i to CPU i")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", metavar="FILE", help="also write every run's numbers here")
    args = ap.parse_args(argv)
    print("$", shlex.join([os.path.basename(sys.executable), *sys.argv]))
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}, pin={args.pin}, "
          f"options: {DB_OPTIONS}")
    rng = np.random.default_rng(args.seed)
    keys = [bytes(r) for r in rng.integers(0, 256, (args.keys, 16), dtype=np.uint8)]
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for rep in range(args.repeat):
        for workers in (1, 2):       # alternate, so drift hits both alike
            r = run_once(workers, keys, args)
            runs[workers].append(r)
            print(f"  repeat {rep + 1} workers {workers}: load {r['load_s']:.1f}s, flushes "
                  f"{r['timed_s']:.2f}s, {r['mb_per_s']:.0f} MB/s, worker CPU "
                  f"{'+'.join(f'{c:.2f}' for c in r['worker_cpu_s'])}s (util "
                  f"{r['cpu_util']:.0%}), machine busy {r['machine_busy']:.0%}, leaves "
                  f"{r['leaves']}, splits {r['splits']}, merges while filling "
                  f"{r['background_merges']}", flush=True)
            if workers > 1 and min(r["worker_cpu_s"]) < 0.25 * sum(r["worker_cpu_s"]):
                print("  warning: one worker did under a quarter of the merge work")
    summary = {w: summarize(rs) for w, rs in runs.items()}
    print()
    print_table(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "options": DB_OPTIONS, "args": vars(args),
                       "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
