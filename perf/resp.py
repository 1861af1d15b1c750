"""The Redis protocol on ``fusedb serve`` against redis-server, side by side in one run.

    python perf/resp.py [--rounds 3] [--requests 100000] [--latency-calls 20000]

Servers (each on an ephemeral 127.0.0.1 port, started and stopped here):

- ``redis``: redis-server without persistence (``--save '' --appendonly no``);
- ``redis-aof``: redis-server ``--appendonly yes --appendfsync everysec`` (the
  like-for-like durability: FuseDB's default ``interval`` fsyncs every 0.1 s);
- ``fusedb-1``: ``fusedb serve PATH --port P --servers 1 --shards 1``;
- ``fusedb-2``: the same with ``--servers 2``.

Pinning (``taskset``, on a host with at least 2 CPUs): redis-benchmark
(``--threads 1``) and the redis-py client of the latency runs on CPU 0;
redis-server and ``fusedb-1`` (all its processes: serve, the shard worker,
the server process) on CPU 1, so each server gets one core the benchmark
does not use. ``fusedb-2`` gets CPUs 0-1, the second
shared with the benchmark: on a 2-CPU host it cannot show what a second
free core gives (see docs/perf.md for the per-core prediction).

Measures, per round, in the order of the servers above (interleaved rounds,
medians reported):

1. ``redis-benchmark -h 127.0.0.1 -p P -t set,get,incr -n N -c 50 -q --csv``
   and the same with ``-P 16``: requests per second; and ``redis-benchmark
   -n N -c 50 -r 100000 EVALSHA <sha> 1 lim:__rand_int__ 60 1`` of limits'
   fixed-window script (incr_expire.lua), loaded first.
   With it, the servers' CPU (all their processes, psutil) per request:
   independent of the machine's load, it predicts a core's throughput.
2. Sequential redis-py 8 (RESP2, one connection): p50 and p99 latency of
   GET, SET and INCR, microseconds, ``--latency-calls`` calls each.

Prints a table per measure and the ratio of each FuseDB row to redis (no
persistence) and to redis-aof. Needs redis-server and redis-benchmark on PATH.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import psutil
import redis

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = ("SET", "GET", "INCR")
SERVERS = ("redis", "redis-aof", "fusedb-1", "fusedb-2")
BOOT_TIMEOUT = 60.0
#: limits 5.8.0's incr_expire.lua (its fixed window), verbatim.
INCR_EXPIRE = """local current
local amount = tonumber(ARGV[2])
current = redis.call("incrby", KEYS[1], amount)

if tonumber(current) == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end

return current
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinning() -> tuple[list[str], list[str], list[str]]:
    """taskset prefixes: (benchmark, one-core server, two-core server); empty
    without taskset or with fewer than 2 CPUs."""
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return [], [], []
    return ["taskset", "-c", "0"], ["taskset", "-c", "1"], ["taskset", "-c", "0,1"]


def wait_ping(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    c = redis.Redis(host="127.0.0.1", port=port, protocol=2, socket_timeout=5)
    try:
        while True:
            try:
                if c.ping():
                    return
            except redis.ConnectionError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"server on {port} did not answer in {BOOT_TIMEOUT}s")
            time.sleep(0.05)
    finally:
        c.close()


def cpu_seconds(proc: subprocess.Popen) -> float:
    """User + system CPU seconds of ``proc`` and its live descendants (a
    FuseDB daemon: serve, the shard worker, the server processes)."""
    total = 0.0
    try:
        root = psutil.Process(proc.pid)
        for p in [root] + root.children(recursive=True):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


@contextmanager
def server(kind: str, where: str, pins: tuple):
    """Start ``kind`` (one of SERVERS) in ``where``; yield (port, process);
    stop it by its pid (SIGTERM, then SIGKILL of its process group)."""
    port = free_port()
    _, one, two = pins
    if kind.startswith("redis"):
        cmd = one + ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--dir", where, "--logfile", os.path.join(where, "redis.log")]
        cmd += (["--appendonly", "yes", "--appendfsync", "everysec"] if kind == "redis-aof"
                else ["--appendonly", "no"])
    else:
        k = int(kind.rsplit("-", 1)[1])
        cmd = (one if k == 1 else two) + [
            sys.executable, "-m", "fusedb", "serve", os.path.join(where, "db"), "--port",
            str(port), "--servers", str(k), "--shards", "1", "--log-level", "warning"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    with open(os.path.join(where, f"{kind}.out"), "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ping(port, proc)
        yield port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)


def benchmark(port: int, requests: int, pipeline: int, pins: tuple) -> dict[str, float]:
    """redis-benchmark's requests per second per test."""
    cmd = pins[0] + ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t",
                     "set,get,incr", "-n", str(requests), "-c", "50", "-P", str(pipeline),
                     "--threads", "1", "-q", "--csv"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
    rows = csv.reader(io.StringIO(out))
    return {row[0]: float(row[1]) for row in rows if row and row[0] in TESTS}


def script_benchmark(port: int, requests: int, pins: tuple) -> float:
    """redis-benchmark's requests per second of EVALSHA of limits' fixed
    window script (incr_expire.lua: INCRBY, EXPIRE on the first hit) over
    100,000 random keys, -c 50, no pipelining."""
    c = redis.Redis(host="127.0.0.1", port=port, protocol=2)
    sha = c.script_load(INCR_EXPIRE)
    c.close()
    cmd = pins[0] + ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n",
                     str(requests), "-c", "50", "-r", "100000", "--threads", "1", "-q", "--csv",
                     "EVALSHA", sha, "1", "lim:__rand_int__", "60", "1"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
    rows = [row for row in csv.reader(io.StringIO(out)) if row and row[0] != "test"]
    return float(rows[0][1])


def latency(port: int, calls: int) -> dict[str, tuple[float, float]]:
    """(p50, p99) microseconds of sequential redis-py GET, SET, INCR."""
    c = redis.Redis(host="127.0.0.1", port=port, protocol=2)
    c.set("lat:k", "v" * 16)
    ops = {"SET": lambda: c.set("lat:k", "v" * 16), "GET": lambda: c.get("lat:k"),
           "INCR": lambda: c.incr("lat:n")}
    out = {}
    for name in TESTS:
        fn = ops[name]
        for _ in range(1000):         # warm-up
            fn()
        times = []
        for _ in range(calls):
            t = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t)
        times.sort()
        out[name] = (times[len(times) // 2] / 1e3, times[int(len(times) * 0.99)] / 1e3)
    c.close()
    return out


def table(title: str, rows: dict[str, dict[str, float]], unit: str, higher_better: bool) -> None:
    print(f"\n### {title} ({unit}, median of rounds)\n")
    cols = list(next(iter(rows.values())).keys())
    print("| server | " + " | ".join(cols) + " |")
    print("|---|" + "--:|" * len(cols))
    for name, row in rows.items():
        cells = []
        for col in cols:
            v = row[col]
            text = f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
            if name.startswith("fusedb"):
                ratios = [v / rows[base][col] for base in ("redis", "redis-aof") if base in rows]
                text += " (" + " / ".join(f"{x:.2f}×" for x in ratios) + ")"
            cells.append(text)
        print(f"| {name} | " + " | ".join(cells) + " |")
    better = "higher" if higher_better else "lower"
    print(f"\nRatios: FuseDB / redis (no persistence) / redis-aof; {better} is better.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--latency-calls", type=int, default=20_000)
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="which of " + ",".join(SERVERS))
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # stop the servers on kill
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH (Debian: apt-get install redis-server)")
    kinds = args.servers.split(",")
    pins = pinning()
    if pins[0]:
        os.sched_setaffinity(0, {0})      # the redis-py client of the latency runs: CPU 0
    print(f"# perf/resp.py: {os.cpu_count()} CPUs, load average {os.getloadavg()}, "
          f"pinning {'on' if pins[0] else 'off'}", flush=True)
    got: dict[str, dict[str, list]] = {k: {} for k in kinds}
    for rnd in range(args.rounds):
        for kind in kinds:
            where = tempfile.mkdtemp(prefix=f"resp-{kind}-")
            try:
                with server(kind, where, pins) as (port, proc):
                    for p in (1, 16):
                        cpu = cpu_seconds(proc)
                        for test, rps in benchmark(port, args.requests, p, pins).items():
                            got[kind].setdefault(f"{test} P{p}", []).append(rps)
                        cpu = cpu_seconds(proc) - cpu
                        got[kind].setdefault(f"cpu P{p}", []).append(
                            cpu / (len(TESTS) * args.requests) * 1e6)
                    got[kind].setdefault("EVALSHA P1", []).append(
                        script_benchmark(port, args.requests, pins))
                    for test, (p50, p99) in latency(port, args.latency_calls).items():
                        got[kind].setdefault(f"{test} p50", []).append(p50)
                        got[kind].setdefault(f"{test} p99", []).append(p99)
            finally:
                shutil.rmtree(where, ignore_errors=True)
            print(f"round {rnd + 1}/{args.rounds} {kind}: "
                  + ", ".join(f"{k} {v[-1]:,.1f}" for k, v in got[kind].items()), flush=True)
    med = {k: {m: statistics.median(v) for m, v in row.items()} for k, row in got.items()}
    table("redis-benchmark -c 50, requests per second",
          {k: {m: v for m, v in row.items() if " P" in m and not m.startswith("cpu")}
           for k, row in med.items()},
          "requests/s", True)
    table("server CPU per request of the SET/GET/INCR runs (all its processes)",
          {k: {m: v for m, v in row.items() if m.startswith("cpu")} for k, row in med.items()},
          "µs", False)
    table("sequential redis-py 8 (RESP2), latency",
          {k: {m: v for m, v in row.items() if " p" in m} for k, row in med.items()},
          "µs", False)


if __name__ == "__main__":
    main()
