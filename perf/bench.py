"""FuseDB side by side with the engines users would pick instead, in one run.

    python perf/bench.py [--workloads ycsb-a,counters] [--engines fusedb,rocksdict]
                         [--keys 1000000] [--ops 1000000] [--key-size 16] [--value-size 100]
                         [--dist zipfian|uniform] [--seed 42] [--plot DIR] [--json FILE]

Each (engine, workload) runs in a fresh process on an empty directory: load
``--keys`` keys, then run ``--ops`` operations of the mix, timing every
operation into HDR histograms (overall and per one-second window). Prints one
table; ``--plot DIR`` also writes PNG charts. Redis is skipped with a message
when the Debian ``redis-server`` package is not installed. Settings used for each
engine: see perf/engines.py.
"""

from __future__ import annotations

import argparse
import array
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def disk_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except FileNotFoundError:
                pass
    return total


def make_keys(args) -> list[bytes]:
    kfmt = b"user%0" + str(args.key_size - 4).encode() + b"d"
    return [kfmt % i for i in range(args.keys)]


def value_pool(args) -> list[bytes]:
    """1,024 distinct random values (fixed seed): incompressible, as YCSB's, so
    an engine that compresses (RocksDB does, by default) is not flattered by
    repeated bytes. Key i is loaded with pool[i % 1024]; the n-th write of a run
    writes pool[n % 1024]."""
    import numpy as np
    rng = np.random.default_rng(args.seed + 1_000_003)
    return [rng.bytes(args.value_size) for _ in range(1024)]


def drive(eng, workload: str, args, seed: int, count: int, barrier=None) -> dict:
    """Run ``count`` operations of ``workload`` on ``eng``, timing each one.
    Returns encoded HDR histograms (overall and per one-second window), the
    logical bytes written and the elapsed time. ``barrier``: wait on it first
    (the processes of a multi-process run start together)."""
    import numpy as np
    from hdrh.histogram import HdrHistogram

    from workloads import WRITES, op_stream, uniform, zipfian

    rng = np.random.default_rng(seed)
    n = args.keys
    keys = make_keys(args)
    pool = value_pool(args)
    pick = zipfian if args.dist == "zipfian" else uniform
    idx = pick(n, count, rng).tolist()     # lists: indexing one is cheaper than numpy's
    ops, names = op_stream(workload, count, rng)
    ops = ops.tolist()
    # Each operation's latency and end time go into preallocated arrays (an item
    # store: ~0.06 us); the HDR histograms are built after the timed loop.
    # Recording into them inside it cost ~2.5 us per record_value, twice per
    # operation: more than FuseDB's whole operation, the same for every engine,
    # so it hid the engines' differences under the harness's own cost.
    lat = array.array("q", bytes(8 * count))
    ends = array.array("q", bytes(8 * count))
    logical = 0
    now_ns = time.perf_counter_ns
    # The harness's own objects (a list of every key, the op streams) are moved
    # out of the cyclic collector's reach, for every engine alike, so its full
    # collections do not show up as any engine's tail latency.
    gc.collect()
    gc.freeze()
    if barrier is not None:
        barrier.wait()
    start = now_ns()
    ttl = 30.0
    for i in range(count):
        k = keys[idx[i]]
        op = names[ops[i]]
        value = pool[i & 1023]
        t0 = now_ns()
        if op == "read":
            eng.get(k)
        elif op == "update":
            eng.put(k, value)
        elif op == "rmw":
            eng.get(k)
            eng.put(k, value)
        elif op == "incr":
            eng.incr(b"c" + k)
        elif op == "put_ttl":
            eng.put_ttl(b"s" + k, value, ttl)
        elif op == "delete":
            eng.delete(b"s" + k)
        else:   # ratelimit: a fixed one-second window per user
            wk = b"rl:%s:%d" % (k, (t0 - start) // 1_000_000_000)
            if eng.incr(wk) == 1:
                eng.expire(wk, 2.0)
        t1 = now_ns()
        lat[i] = t1 - t0
        ends[i] = t1
        if op in WRITES:
            logical += len(k) + (len(value) if op in ("update", "rmw", "put_ttl") else 8)
    elapsed = (now_ns() - start) / 1e9
    hist = HdrHistogram(1, 60_000_000_000, 3)
    windows: list = []
    win = HdrHistogram(1, 60_000_000_000, 3)
    win_start = start
    for dt, t1 in zip(lat, ends):
        hist.record_value(dt)
        win.record_value(dt)
        if t1 - win_start >= 1_000_000_000:     # one-second windows, as before
            windows.append(win.encode())
            win = HdrHistogram(1, 60_000_000_000, 3)
            win_start = t1
    if win.get_total_count():
        windows.append(win.encode())
    return {"hist": hist.encode(), "windows": windows, "logical": logical,
            "elapsed": elapsed, "ops": count}


def client_main(engine_name: str, info, workload: str, args, i: int, barrier, out) -> None:
    """One client process of a multi-process run: attach, pin, drive, report."""
    import psutil

    from engines import ENGINES
    if args.pin:
        cpus = sorted(psutil.Process().cpu_affinity())
        psutil.Process().cpu_affinity([cpus[i % len(cpus)]])
    from engines import io_written
    eng = ENGINES[engine_name]()
    eng.attach(info)
    try:
        io0 = io_written(os.getpid())
        res = drive(eng, workload, args, args.seed + 1 + i, args.ops // args.processes, barrier)
        res["io"] = io_written(os.getpid()) - io0
        res["rss_mb"] = psutil.Process().memory_info().rss / 2**20
        out.put(res)
    finally:
        eng.detach()


def run_one(engine_name: str, workload: str, args) -> dict:
    """One engine, one workload, in this process (and ``--processes`` clients).
    Returns the result record."""
    import multiprocessing

    import psutil
    from hdrh.histogram import HdrHistogram

    from engines import ENGINES

    eng = ENGINES[engine_name]()
    d = tempfile.mkdtemp(prefix=f"bench-{engine_name}-")
    procs = args.processes
    args.workload = workload
    try:
        eng.open(os.path.join(d, "db"), args)
        keys = make_keys(args)
        pool = value_pool(args)
        values = [pool[i & 1023] for i in range(len(keys))]
        t_load = time.perf_counter()
        eng.load(keys, values)
        load_s = time.perf_counter() - t_load
        del keys, values
        io0 = eng.io_written()
        own0 = eng.engine_bytes_written()
        if procs == 1:
            parts = [drive(eng, workload, args, args.seed, args.ops)]
            rss = psutil.Process().memory_info().rss / 2**20
        else:
            ctx = multiprocessing.get_context("spawn")
            barrier = ctx.Barrier(procs)
            out = ctx.Queue()
            workers = [ctx.Process(target=client_main,
                                   args=(engine_name, eng.share(), workload, args, i, barrier,
                                         out)) for i in range(procs)]
            for w in workers:
                w.start()
            parts = [out.get() for _ in workers]
            for w in workers:
                w.join()
                if w.exitcode != 0:
                    raise RuntimeError(f"a client process failed (exit {w.exitcode})")
            rss = max(p["rss_mb"] for p in parts)
        own = eng.engine_bytes_written()
        io = eng.io_written() - io0 + sum(p.get("io", 0) for p in parts)
        extra = getattr(eng, "stats", None)
        eng.close()
        space = disk_bytes(os.path.join(d, "db"))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    hist = HdrHistogram(1, 60_000_000_000, 3)
    wins: list = []
    for p in parts:
        hist.add(HdrHistogram.decode(p["hist"]))
        for j, w in enumerate(p["windows"]):
            if j == len(wins):
                wins.append(HdrHistogram(1, 60_000_000_000, 3))
            wins[j].add(HdrHistogram.decode(w))
    windows = [w.get_value_at_percentile(99.9) for w in wins]
    med = sorted(windows)[len(windows) // 2] if windows else 0
    ops = sum(p["ops"] for p in parts)
    logical = sum(p["logical"] for p in parts)
    return {
        "engine": engine_name, "workload": workload, "ops": ops, "processes": procs,
        "load_s": load_s,
        "ops_per_s": ops / max(p["elapsed"] for p in parts),
        "p50_us": hist.get_value_at_percentile(50) / 1e3,
        "p99_us": hist.get_value_at_percentile(99) / 1e3,
        "p999_us": hist.get_value_at_percentile(99.9) / 1e3,
        "max_us": hist.get_max_value() / 1e3,
        "window_p999_us": [w / 1e3 for w in windows],
        "worst_window_ratio": (max(windows) / med) if med else 0.0,
        "logical_bytes": logical,
        "wa_engine": ((own - own0) / logical) if own is not None and logical else None,
        "wa_proc_io": (io / logical) if logical else None,
        "disk_bytes": space,
        "peak_rss_mb": rss,
        "native_ttl": eng.native_ttl, "native_incr": eng.native_incr,
        "fusedb_stats": {k: extra[k] for k in ("leaves", "merges", "splits", "write_stalls")}
        if extra else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="ycsb-a,ycsb-b,ycsb-f,counters,sessions,ratelimit")
    ap.add_argument("--engines", default="fusedb,rocksdict,lmdb,sqlite3,diskcache,redis")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--key-size", type=int, default=16)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--dist", choices=("zipfian", "uniform"), default="zipfian")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--processes", type=int, default=1,
                    help="client processes on one database (rocksdict: 1 only)")
    ap.add_argument("--shards", type=int, default=0,
                    help="fusedb shards (worker processes); default: as many as --processes")
    ap.add_argument("--embedded", action="store_true",
                    help="fusedb embedded (one process, merges in a thread) instead")
    ap.add_argument("--pin", action="store_true",
                    help="pin client process i and fusedb worker i to CPU i (psutil)")
    ap.add_argument("--progress", action="store_true", help="draw a progress bar")
    ap.add_argument("--plot", metavar="DIR")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--run-one", nargs=2, metavar=("ENGINE", "WORKLOAD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_one:
        print(json.dumps(run_one(args.run_one[0], args.run_one[1], args)))
        return
    if args.embedded and args.processes > 1:
        ap.error("--embedded runs fusedb in one process; it cannot serve --processes > 1")
    from engines import RedisEngine
    engines = args.engines.split(",")
    if "redis" in engines and not RedisEngine.server:
        print("redis: skipped, the Debian redis-server package is not installed "
              "(apt-get install redis-server)", file=sys.stderr)
        engines.remove("redis")
    if args.processes > 1 and "rocksdict" in engines:
        print("rocksdict: skipped for --processes > 1 (RocksDB opens a database in one "
              "process only)", file=sys.stderr)
        engines.remove("rocksdict")
    if args.processes > 1 and "dict" in engines:
        print("dict: skipped for --processes > 1 (a dict lives in one process)", file=sys.stderr)
        engines.remove("dict")
    results = []
    passthrough = ["--keys", str(args.keys), "--ops", str(args.ops), "--key-size",
                   str(args.key_size), "--value-size", str(args.value_size), "--dist", args.dist,
                   "--seed", str(args.seed), "--processes", str(args.processes),
                   "--shards", str(args.shards)] + (["--pin"] if args.pin else []) + \
        (["--embedded"] if args.embedded else [])
    jobs = [(w, e) for w in args.workloads.split(",") for e in engines]
    t0 = time.monotonic()
    for n, (w, e) in enumerate(jobs):
        progress(n, len(jobs), f"{w} on {e}", t0, args.progress)
        out = subprocess.run([sys.executable, __file__, "--run-one", e, w] + passthrough,
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"\n  {w} on {e} failed: {out.stderr.strip().splitlines()[-1:]}",
                  file=sys.stderr)
            continue
        results.append(json.loads(out.stdout))
    progress(len(jobs), len(jobs), "done", t0, args.progress)
    print_table(results, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    if args.plot:
        plot(results, args.plot)


def progress(done: int, total: int, what: str, t0: float, bar: bool) -> None:
    """A progress line on stderr: a bar redrawn in place with --progress, else
    one line per job."""
    el = time.monotonic() - t0
    eta = f"{el / done * (total - done):.0f}s" if done else "?"
    if not bar:
        if done < total:
            print(f"[{done + 1}/{total}] {what} ...", file=sys.stderr, flush=True)
        return
    width = 30
    fill = width * done // total
    print(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} {el:.0f}s elapsed, "
          f"ETA {eta}  {what:<28}", end="" if done < total else "\n", file=sys.stderr,
          flush=True)


def print_table(results: list[dict], args) -> None:
    print(f"\nkeys={args.keys:,} ops={args.ops:,} key={args.key_size}B value={args.value_size}B "
          f"dist={args.dist} seed={args.seed} processes={args.processes}"
          f"{' pinned' if args.pin else ''} fusedb="
          f"{'embedded' if args.embedded else f'{args.shards or args.processes} worker(s)'}")
    print(f"{'workload':10} {'engine':10} {'ops/s':>10} {'p50 us':>8} {'p99 us':>8} "
          f"{'p99.9 us':>9} {'max us':>9} {'win p99.9 max/med':>17} {'WA':>6} {'WA io':>6} "
          f"{'disk MB':>8} {'RSS MB':>7} {'load s':>7}")
    for r in results:
        wa = f"{r['wa_engine']:.2f}" if r["wa_engine"] is not None else "-"
        wio = f"{r['wa_proc_io']:.2f}" if r["wa_proc_io"] is not None else "-"
        print(f"{r['workload']:10} {r['engine']:10} {r['ops_per_s']:>10,.0f} {r['p50_us']:>8.1f} "
              f"{r['p99_us']:>8.1f} {r['p999_us']:>9.1f} {r['max_us']:>9.0f} "
              f"{r['worst_window_ratio']:>17.2f} {wa:>6} {wio:>6} "
              f"{r['disk_bytes'] / 2**20:>8.1f} {r['peak_rss_mb']:>7.0f} {r['load_s']:>7.1f}")


def plot(results: list[dict], outdir: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(outdir, exist_ok=True)
    for w in sorted({r["workload"] for r in results}):
        rs = [r for r in results if r["workload"] == w]
        fig, ax = plt.subplots(1, 2, figsize=(12, 4))
        for r in rs:
            ax[0].plot(["p50", "p99", "p99.9"], [r["p50_us"], r["p99_us"], r["p999_us"]],
                       marker="o", label=r["engine"])
            ax[1].plot(r["window_p999_us"], label=r["engine"])
        ax[0].set_yscale("log")
        ax[0].set_ylabel("latency (us)")
        ax[0].set_title(f"{w}: percentiles")
        ax[1].set_yscale("log")
        ax[1].set_xlabel("second")
        ax[1].set_title(f"{w}: p99.9 per 1 s window")
        ax[0].legend()
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, f"{w}.png"))
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['workload']}\n{r['engine']}" for r in results if r["wa_proc_io"] is not None]
    ax.bar(range(len(labels)), [r["wa_proc_io"] for r in results if r["wa_proc_io"] is not None])
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_ylabel("bytes written to disk / logical bytes")
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "write_amplification.png"))
    plt.close(fig)


if __name__ == "__main__":
    main()
