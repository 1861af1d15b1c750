"""Markdown tables from ``perf/bench.py --json`` files (for docs/perf.md).

    python perf/report.py RUN.json [RUN.json ...]

One table per file: the run's settings, then a row per (workload, engine) with
throughput, latency percentiles, the worst one-second window's p99.9 over the
median window's, write amplification (the engine's own counters and
/proc/PID/io), disk space and peak RSS; then, per workload, FuseDB's ratios to
the other engines.
"""

from __future__ import annotations

import json
import sys


def table(path: str) -> str:
    with open(path) as f:
        run = json.load(f)
    a, results = run["args"], run["results"]
    mode = ("embedded" if a.get("embedded")
            else f"{a['shards'] or a['processes']} worker process(es)")
    out = [f"`python perf/bench.py --keys {a['keys']} --ops {a['ops']} --processes "
           f"{a['processes']} --workloads {a['workloads']} --engines {a['engines']}`"
           f"{' --pin' if a.get('pin') else ''} (zipfian 0.99 scrambled, "
           f"{a['key_size']}-byte keys, "
           f"{a['value_size']}-byte random values, seed {a['seed']}; FuseDB: {mode})", "",
           "| workload | engine | ops/s | p50 µs | p99 µs | p99.9 µs | max µs | worst/median "
           "1-s p99.9 | WA | WA io | disk MB | RSS MB |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        wa = f"{r['wa_engine']:.2f}" if r["wa_engine"] is not None else "–"
        wio = f"{r['wa_proc_io']:.2f}" if r["wa_proc_io"] is not None else "–"
        out.append(f"| {r['workload']} | {r['engine']} | {r['ops_per_s']:,.0f} | "
                   f"{r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['p999_us']:.1f} | "
                   f"{r['max_us']:,.0f} | {r['worst_window_ratio']:.2f} | {wa} | {wio} | "
                   f"{r['disk_bytes'] / 2**20:.1f} | {r['peak_rss_mb']:.0f} |")
    out += ["", "FuseDB's throughput and p99.9 relative to each engine (>1 throughput: "
            "FuseDB faster; <1 p99.9: FuseDB's tail shorter):", "",
            "| workload | engine | throughput ratio | p99.9 ratio |", "|---|---|--:|--:|"]
    by = {(r["workload"], r["engine"]): r for r in results}
    for (w, e), r in by.items():
        f = by.get((w, "fusedb"))
        if f is None or e == "fusedb":
            continue
        out.append(f"| {w} | {e} | {f['ops_per_s'] / r['ops_per_s']:.2f}× | "
                   f"{f['p999_us'] / r['p999_us']:.2f}× |")
    return "\n".join(out)


def main() -> None:
    for path in sys.argv[1:]:
        print(table(path))
        print()


if __name__ == "__main__":
    main()
