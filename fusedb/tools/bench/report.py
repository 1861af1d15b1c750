"""The benchmark's results as a terminal table, markdown tables and PNG charts.

:data:`COLUMNS` names and explains every column once: ``fusedb bench --help``
prints the explanations, :func:`print_table` and :func:`markdown` use the names
(docs/perf.md, "Columns", repeats the explanations).

    python -m fusedb.tools.bench.report RUN.json [RUN.json ...]

prints, per ``--json`` file of a run, its settings, a markdown row per
(workload, engine) and FuseDB's ratios to the other engines (``python
perf/report.py`` is the same).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import NamedTuple


def _opt(v: float | None) -> str:
    return f"{v:.2f}" if v is not None else "-"


class Column(NamedTuple):
    name: str                       # the header
    width: int                      # in the terminal table
    cell: Callable[[dict], str]     # the cell of one result record
    meaning: str                    # one sentence, for --help and the docs


COLUMNS = [
    Column("workload", 10, lambda r: r["workload"],
           "the operation mix (--workloads)"),
    Column("engine", 10, lambda r: r["engine"], "the store measured (--engines)"),
    Column("ops/s", 10, lambda r: f"{r['ops_per_s']:,.0f}",
           "operations per second of the timed run, all client processes together"),
    Column("p50 us", 8, lambda r: f"{r['p50_us']:.1f}",
           "median latency of one operation, microseconds (HDR histogram, 3 digits)"),
    Column("p99 us", 8, lambda r: f"{r['p99_us']:.1f}", "99th percentile latency, us"),
    Column("p99.9 us", 9, lambda r: f"{r['p999_us']:.1f}", "99.9th percentile latency, us"),
    Column("max us", 9, lambda r: f"{r['max_us']:,.0f}", "the slowest operation, us"),
    Column("worst/median 1-s p99.9", 22, lambda r: f"{r['worst_window_ratio']:.2f}",
           "the p99.9 latency of each one-second window of the run: the worst window's "
           "over the median window's (1 = a steady tail; 10 = one second had a 10x "
           "worse tail, e.g. a stall behind a merge or compaction)"),
    Column("WA", 6, lambda r: _opt(r["wa_engine"]),
           "write amplification from the engine's own counters: bytes it wrote (FuseDB: "
           "WAL + segments; RocksDB: WAL + flush + compaction) over the logical bytes "
           "the run wrote (key + value; key + 8 for a counter); - where the engine "
           "counts none"),
    Column("WA io", 6, lambda r: _opt(r["wa_proc_io"]),
           "write amplification from the kernel: write_bytes of /proc/PID/io of the "
           "engine's processes over the same logical bytes (pages an mmap or the page "
           "cache writes back later are not charged to a process: lmdb shows 0.00)"),
    Column("disk MB", 8, lambda r: f"{r['disk_bytes'] / 2**20:.1f}",
           "the database directory's size after close, MiB"),
    Column("RSS MB", 7, lambda r: f"{r['peak_rss_mb']:.0f}",
           "resident memory of the measuring process at the end of the run (with "
           "--processes: the largest client's), MiB; a server's or worker's not included"),
    Column("load s", 7, lambda r: f"{r['load_s']:.1f}",
           "seconds to load --keys keys before the timed run (not timed into the rest)"),
]


def explained() -> str:
    """The columns and their meanings, wrapped for a terminal (``--help``'s epilog)."""
    import textwrap
    lines = ["columns of the table:"]
    for c in COLUMNS:
        if len(c.name) > 10:
            lines.append(f"  {c.name}")
        first = f"  {c.name:<10}" if len(c.name) <= 10 else " " * 12
        lines += textwrap.wrap(c.meaning, 78, initial_indent=first,
                               subsequent_indent=" " * 12)
    return "\n".join(lines)


def settings(a: dict) -> str:
    """One line: the run's settings (its ``args``)."""
    fusedb = "embedded" if a.get("embedded") else \
        f"{a.get('shards') or a['processes']} worker process(es)"
    return (f"keys={a['keys']:,} ops={a['ops']:,} key={a['key_size']}B "
            f"value={a['value_size']}B dist={a['dist']} seed={a['seed']} "
            f"processes={a['processes']}{' pinned' if a.get('pin') else ''} fusedb={fusedb}")


def print_table(results: list[dict], args: dict) -> None:
    """The terminal table of ``results`` under the run's settings, on stdout."""
    print(f"\n{settings(args)}")
    print(" ".join(f"{c.name:{'<' if i < 2 else '>'}{c.width}}" for i, c in enumerate(COLUMNS)))
    for r in results:
        print(" ".join(f"{c.cell(r):{'<' if i < 2 else '>'}{c.width}}"
                       for i, c in enumerate(COLUMNS)))


def markdown(run: dict) -> str:
    """Markdown tables of one ``--json`` file's contents (for docs/perf.md)."""
    a, results = run["args"], run["results"]
    out = [f"`python perf/bench.py --keys {a['keys']} --ops {a['ops']} --processes "
           f"{a['processes']} --workloads {a['workloads']} --engines {a['engines']}`"
           f"{' --pin' if a.get('pin') else ''} ({a['dist']}, {settings(a)})", "",
           "| " + " | ".join(c.name.replace(" us", " µs") for c in COLUMNS) + " |",
           "|---|---|" + "--:|" * (len(COLUMNS) - 2)]
    for r in results:
        out.append("| " + " | ".join(c.cell(r) for c in COLUMNS) + " |")
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


def plot(results: list[dict], outdir: str) -> None:
    """PNG charts in ``outdir``: per workload, the latency percentiles and the
    p99.9 of every one-second window per engine; the write amplification of
    every run. Needs matplotlib (the bench extra)."""
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


USAGE = """\
usage: python perf/report.py RUN.json [RUN.json ...]

Markdown tables of each file fusedb bench --json FILE wrote: the run's settings,
a row per (workload, engine), FuseDB's ratios to the other engines. The columns:
fusedb bench --help."""


def main(argv: list[str] | None = None) -> int:
    """Markdown tables of each ``--json`` file named; 0, or 2 if one cannot be read."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths or paths[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if paths else sys.stderr)
        return 0 if paths else 2
    for path in paths:
        try:
            with open(path) as f:
                run = json.load(f)
        except (OSError, ValueError) as e:
            print(f"report: {path}: {e}", file=sys.stderr)
            return 2
        print(markdown(run))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
