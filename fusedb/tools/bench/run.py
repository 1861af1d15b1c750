"""One benchmark run: an engine, a workload, timed operation by operation.

:func:`run_one` runs in a fresh process per (engine, workload) pair (the
command, fusedb.tools.bench.command, starts ``python -m fusedb.tools.bench
--run-one ENGINE WORKLOAD``): load ``--keys`` keys, then run ``--ops``
operations of the mix (split over ``--processes`` client processes), timing
every operation; the latencies become HDR histograms (overall and per
one-second window) after the timed loop.
"""

from __future__ import annotations

import array
import gc
import os
import shutil
import tempfile
import time

from fusedb.tools.bench.engines import ENGINES, io_written
from fusedb.tools.bench.workloads import WRITES, op_stream, uniform, zipfian


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
    """One client process of a multi-process run: attach, pin, drive, report.
    Puts its result on ``out``, or ``{"error": one line}`` if it failed (and
    breaks the barrier, so the other clients do not wait for it forever)."""
    import psutil

    try:
        if args.pin:
            cpus = sorted(psutil.Process().cpu_affinity())
            psutil.Process().cpu_affinity([cpus[i % len(cpus)]])
        eng = ENGINES[engine_name]()
        eng.attach(info)
        try:
            io0 = io_written(os.getpid())
            res = drive(eng, workload, args, args.seed + 1 + i, args.ops // args.processes,
                        barrier)
            res["io"] = io_written(os.getpid()) - io0
            res["rss_mb"] = psutil.Process().memory_info().rss / 2**20
        finally:
            eng.detach()
    except Exception as e:
        out.put({"error": f"client process {i}: {type(e).__name__}: {e}"})
        barrier.abort()          # after the put: the others' errors come second
        return
    out.put(res)


def clients(engine_name: str, eng, workload: str, args) -> list[dict]:
    """Run ``args.processes`` client processes on ``eng`` (started together on a
    barrier); their results. Raises RuntimeError with a client's error if one
    fails or dies."""
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(args.processes)
    out = ctx.Queue()
    workers = [ctx.Process(target=client_main,
                           args=(engine_name, eng.share(), workload, args, i, barrier, out))
               for i in range(args.processes)]
    for w in workers:
        w.start()
    try:
        parts: list[dict] = []
        while len(parts) < len(workers):
            try:
                part = out.get(timeout=1.0)
            except queue.Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a client process died (exit {dead[0]})") from None
                continue
            if "error" in part:
                raise RuntimeError(part["error"])
            parts.append(part)
        return parts
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
                w.join()


def run_one(engine_name: str, workload: str, args) -> dict:
    """One engine, one workload, in this process (and ``--processes`` clients).
    Returns the result record."""
    import psutil
    from hdrh.histogram import HdrHistogram

    eng = ENGINES[engine_name]()
    d = tempfile.mkdtemp(prefix=f"bench-{engine_name}-")
    args.workload = workload
    is_open = False
    try:
        eng.open(os.path.join(d, "db"), args)
        is_open = True
        keys = make_keys(args)
        pool = value_pool(args)
        values = [pool[i & 1023] for i in range(len(keys))]
        t_load = time.perf_counter()
        eng.load(keys, values)
        load_s = time.perf_counter() - t_load
        del keys, values
        io0 = eng.io_written()
        own0 = eng.engine_bytes_written()
        if args.processes == 1:
            parts = [drive(eng, workload, args, args.seed, args.ops)]
            rss = psutil.Process().memory_info().rss / 2**20
        else:
            parts = clients(engine_name, eng, workload, args)
            rss = max(p["rss_mb"] for p in parts)
        own = eng.engine_bytes_written()
        io = eng.io_written() - io0 + sum(p.get("io", 0) for p in parts)
        extra = getattr(eng, "stats", None)
        is_open = False
        eng.close()
        space = disk_bytes(os.path.join(d, "db"))
    finally:
        if is_open:         # a failed run: its database, server or workers go too
            try:
                eng.close()
            except Exception:
                pass
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
        "engine": engine_name, "workload": workload, "ops": ops, "processes": args.processes,
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
