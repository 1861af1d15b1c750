"""``fusedb bench``: the command that runs the side-by-side benchmark.

It checks what the run needs before starting it (the harness's ``hdrh``, each
engine's module, ``redis-server``, matplotlib for ``--plot``), runs each
(engine, workload) pair in a fresh process (``python -m fusedb.tools.bench
--run-one ENGINE WORKLOAD``: fusedb.tools.bench.run), prints one table
(fusedb.tools.bench.report) and says what failed, one line per failed run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import subprocess
import sys
import time

from fusedb.tools.bench.engines import ENGINES, RedisEngine
from fusedb.tools.bench.report import explained, plot, print_table
from fusedb.tools.bench.workloads import MIXES

INSTALL = "pip install '.[bench]' in FuseDB's source checkout"

DESCRIPTION = """\
FuseDB side by side with the engines users would pick instead, in one run.

Each (engine, workload) pair runs in a fresh process on an empty directory:
load --keys keys, then run --ops operations of the mix, timing every operation
(HDR histograms, overall and per one-second window). Prints one table; --plot
DIR also writes PNG charts, --json FILE the results (python perf/report.py FILE
turns them into markdown). Needs the bench extra: pip install '.[bench]' in the source checkout;
Redis needs the redis-server program too (Debian: apt-get install
redis-server). An engine that is not installed is skipped, with what to
install. Settings used for each engine: fusedb/tools/bench/engines.py."""

EXIT_STATUS = """\
exit status: 0 every run finished, 1 a run failed (one line each on stderr;
the other runs are in the table), 2 bad options, or a module the benchmark
itself needs is not installed (nothing ran), 3 an engine was skipped because
it is not installed (the other runs finished)."""

OK, FAILED, USAGE, SKIPPED = 0, 1, 2, 3


def parser(prog: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                 epilog=explained() + "\n\n" + EXIT_STATUS,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="ycsb-a,ycsb-b,ycsb-f,counters,sessions,ratelimit",
                    help=f"comma-separated, of: {', '.join(MIXES)} (default: all)")
    ap.add_argument("--engines", default="fusedb,rocksdict,lmdb,sqlite3,diskcache,redis",
                    help=f"comma-separated, of: {', '.join(ENGINES)} (default: all but "
                         f"dict, the harness's ceiling)")
    ap.add_argument("--keys", type=_count, default=1_000_000, help="keys loaded (1,000,000)")
    ap.add_argument("--ops", type=_count, default=1_000_000,
                    help="operations timed (1,000,000)")
    ap.add_argument("--key-size", type=_count, default=16, help="bytes per key (16)")
    ap.add_argument("--value-size", type=_count, default=100, help="bytes per value (100)")
    ap.add_argument("--dist", choices=("zipfian", "uniform"), default="zipfian",
                    help="key popularity (zipfian: YCSB's, theta 0.99, scrambled)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--processes", type=_count, default=1,
                    help="client processes on one database (rocksdict: 1 only)")
    ap.add_argument("--shards", type=int, default=0,
                    help="fusedb shards (worker processes); default: as many as --processes")
    ap.add_argument("--embedded", action="store_true",
                    help="fusedb embedded (one process, merges in a thread) instead")
    ap.add_argument("--pin", action="store_true",
                    help="pin client process i and fusedb worker i to CPU i (psutil)")
    ap.add_argument("--progress", action="store_true", help="draw a progress bar")
    ap.add_argument("--plot", metavar="DIR", help="write PNG charts there (matplotlib)")
    ap.add_argument("--json", metavar="FILE", help="write the results there")
    ap.add_argument("--run-one", nargs=2, metavar=("ENGINE", "WORKLOAD"), help=argparse.SUPPRESS)
    return ap


def _count(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return v


def cannot_import(module: str) -> str | None:
    """Why ``module`` cannot be imported (the ImportError's message), or None."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        return str(e)
    return None


def skip_reason(engine: str, args) -> tuple[str, bool] | None:
    """Why ``engine`` cannot run here: (reason, whether it is not installed) or
    None. Not installed: its module (or Redis's server program) is missing;
    otherwise it cannot serve this mode (one process only)."""
    cls = ENGINES[engine]
    if cls.module and (why := cannot_import(cls.module)):
        how = f"{INSTALL} (or: pip install {cls.package})" if cls.package else \
            f"a Python built with the {cls.module} module"
        return f"cannot import {cls.module} ({why}): {how}", True
    if cls is RedisEngine and not RedisEngine.server:
        return ("the redis-server program is not installed (Debian: apt-get install "
                "redis-server)"), True
    if args.processes > 1 and engine == "rocksdict":
        return "RocksDB opens a database in one process only: not run with --processes > 1", \
            False
    if args.processes > 1 and engine == "dict":
        return "a dict lives in one process: not run with --processes > 1", False
    return None


def main(argv: list[str] | None = None, prog: str = "fusedb bench") -> int:
    """Run the benchmark with command-line ``argv``; the exit status
    (:data:`EXIT_STATUS`). Bad options exit (SystemExit 2) as argparse does."""
    ap = parser(prog)
    args = ap.parse_args(argv)
    if args.run_one:
        from fusedb.tools.bench.run import run_one
        print(json.dumps(run_one(args.run_one[0], args.run_one[1], args)))
        return OK
    if args.embedded and args.processes > 1:
        ap.error("--embedded runs fusedb in one process; it cannot serve --processes > 1")
    workloads, engines = args.workloads.split(","), args.engines.split(",")
    for what, names, known in (("workload", workloads, MIXES), ("engine", engines, ENGINES)):
        unknown = [n for n in names if n not in known]
        if unknown:
            ap.error(f"unknown {what}(s): {', '.join(unknown)} (known: {', '.join(known)})")
    needs = [("hdrh", "hdrhistogram")] + ([("matplotlib", "matplotlib")] if args.plot else [])
    for module, package in needs:
        why = cannot_import(module)
        if why:
            print(f"{prog}: cannot import {module} ({why}), which the benchmark needs: "
                  f"{INSTALL} (or: pip install {package})", file=sys.stderr)
            return USAGE
    status = OK
    for e in list(engines):
        skip = skip_reason(e, args)
        if skip:
            print(f"{prog}: {e}: skipped, {skip[0]}", file=sys.stderr)
            engines.remove(e)
            status = SKIPPED if skip[1] else status
    jobs = [(w, e) for w in workloads for e in engines]
    if not jobs:
        print(f"{prog}: nothing to run", file=sys.stderr)
        return USAGE
    passthrough = ["--keys", str(args.keys), "--ops", str(args.ops), "--key-size",
                   str(args.key_size), "--value-size", str(args.value_size), "--dist", args.dist,
                   "--seed", str(args.seed), "--processes", str(args.processes),
                   "--shards", str(args.shards)] + (["--pin"] if args.pin else []) + \
        (["--embedded"] if args.embedded else [])
    results, failed = [], []
    t0 = time.monotonic()
    for n, (w, e) in enumerate(jobs):
        progress(n, len(jobs), f"{w} on {e}", t0, args.progress)
        out = run_process([sys.executable, "-m", "fusedb.tools.bench", "--run-one", e, w]
                          + passthrough)
        if out.returncode != 0:
            failed.append(f"{w} on {e} failed: {summary(out)}")
            print(f"{chr(10) if args.progress else ''}{prog}: {failed[-1]}", file=sys.stderr,
                  flush=True)
            continue
        results.append(json.loads(out.stdout))
    progress(len(jobs), len(jobs), "done", t0, args.progress)
    if results:
        print_table(results, vars(args))
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "results": results, "failed": failed}, f,
                          indent=1)
        except OSError as e:
            print(f"{prog}: --json: {e}", file=sys.stderr)
            return FAILED
    if args.plot and results:
        plot(results, args.plot)
    if failed:
        print(f"{prog}: {len(failed)} of {len(jobs)} run(s) failed", file=sys.stderr)
        return FAILED
    return status


#: Seconds a run's process has to clean up after Ctrl-C (close its engine: a
#: server, worker processes, shared memory; remove its directory).
CLEANUP_TIMEOUT = 60.0


def run_process(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run one run's process, its output captured. It runs in a process group of
    its own, so Ctrl-C reaches this process only, which then sends it one SIGINT
    and waits (at most :data:`CLEANUP_TIMEOUT`) while it cleans up, before
    raising KeyboardInterrupt: a second SIGINT, or a kill, would leave its
    engine's processes and files behind."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=CLEANUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def summary(out: subprocess.CompletedProcess) -> str:
    """One line saying why a run's process failed: the last line of its
    stderr (the exception), or the signal that killed it."""
    if out.returncode < 0:
        return f"killed by {signal.Signals(-out.returncode).name}"
    lines = [ln.strip() for ln in out.stderr.splitlines() if ln.strip()]
    return f"{lines[-1] if lines else 'no message'} (exit status {out.returncode})"


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
