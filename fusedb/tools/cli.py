"""fusedb: the FuseDB command (run a database as a daemon, look at it, check and repair it).

    fusedb serve [PATH]   run the database at PATH (default ./fusedb-data) as a daemon:
                          it owns the database and supervises the shard workers;
                          processes attach with fusedb.connect(PATH); SIGTERM or
                          Ctrl-C stops it cleanly (fusedb.tools.serve)
    fusedb stop [PATH]    stop the daemon of PATH; waits until it is down
    fusedb stats [PATH]   the running database's stats, attached clients included
                          (--json for JSON)
    fusedb demo [PATH]    a rate-limiter/session demo on PATH (default ./fusedb-data):
                          2 shard worker processes, 2 client processes
                          (--shards 0 runs it embedded in one process)
    fusedb bench [...]    the side-by-side benchmark (perf/bench.py of a source checkout)
                          with a progress bar; flags as perf/bench.py --help
    fusedb check PATH     verify every file of the database (open or closed)
    fusedb repair PATH    salvage a damaged, closed database; [--json] for a JSON report
    fusedb dump PATH      print manifest, segments and WAL records
    fusedb --version      the version and which path runs: "compiled kernel" or
                          "pure Python (<why>)" (fusedb.core.kernel)

Exit status of serve: 0 stopped cleanly (with --if-not-running: or already
running), 1 could not open, or refused (already running), or could not close
cleanly, 2 bad options. Of stop: 0 stopped, 1 not running, 3 refused (not a daemon's), 4 still
running after --timeout. Of stats: 0 shown, 1 not running.
Exit status of check: 0 healthy, 1 damage found, 2 not a directory, 3 no
consistent snapshot of a very busy open database could be taken (check again).
Exit status of repair (as fsck's): 0 nothing to repair (nothing changed),
1 repaired (damaged files set aside in PATH/lost/, the database opens again),
2 not a directory or no FuseDB files in it, 3 refused: the database is open.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

from fusedb import __version__
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
    how = (f"multiprocess: {shards} shard worker processes, {processes} client processes"
           if shards else "embedded, one process")
    from fusedb import connect
    from fusedb.errors import LockedError, NotRunningError
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
    print(f"FuseDB demo on {path!r} ({how}; {kernel.describe()})")
    with db:
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


def bench(argv: list[str]) -> int:
    """Run perf/bench.py (it lives next to the package in a source checkout, as
    with ``pip install -e .``) with a progress bar."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, "perf", "bench.py")
    if not os.path.exists(script):
        print("fusedb bench: perf/bench.py not found; run it from a source checkout "
              "(pip install -e '.[bench]')", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, script, "--progress"] + argv)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusedb", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version",
                    version=f"fusedb {__version__}, {kernel.describe()}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("serve", help="run the database as a daemon until SIGTERM/Ctrl-C",
                       description=SERVE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("path", nargs="?", default="fusedb-data", help=PATH_HELP)
    v.add_argument("--shards", type=int, help="shard worker processes (default 2)")
    v.add_argument("--pin", action="store_true", help="pin worker i to the i-th CPU")
    v.add_argument("--durability", choices=("sync", "interval", "none"),
                   help="when a write is on disk (default interval)")
    v.add_argument("--group", metavar="GROUP",
                   help="share the database with this group (name or gid): its processes "
                        "may connect (directory 2770, files and shared memory 660)")
    v.add_argument("--config", metavar="FILE",
                   help="a TOML file of options (fusedb.options.Options fields)")
    v.add_argument("--options", metavar="JSON", help="options as a JSON object")
    v.add_argument("--pidfile", metavar="FILE", help="write the daemon's pid there")
    v.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"))
    v.add_argument("--detach", action="store_true",
                   help="fork into the background (log in PATH/serve.log); return "
                        "once it is ready")
    v.add_argument("--if-not-running", action="store_true",
                   help="exit 0 instead of refusing when the database is already open")
    g = v.add_argument_group("the Redis protocol (redis-py, redis-cli, ...)")
    g.add_argument("--port", type=int, default=0, help="TCP port (default 0: none)")
    g.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="TCP address (default 127.0.0.1; another needs --requirepass)")
    g.add_argument("--unixsocket", metavar="PATH",
                   help="listen on a unix socket (alone, or besides --port)")
    g.add_argument("--unixsocketperm", type=_octal, default=0o700, metavar="OCTAL",
                   help="the unix socket's permissions (default 700)")
    g.add_argument("--requirepass", metavar="PW",
                   help="clients AUTH with this password (visible in ps: prefer "
                        "--requirepass-file)")
    g.add_argument("--requirepass-file", metavar="FILE",
                   help="read the password from the first line of FILE")
    g.add_argument("--servers", type=int, default=os.cpu_count() or 1, metavar="K",
                   help="server processes answering the protocol (default: one per CPU; "
                        "at most 4 per CPU)")
    g.add_argument("--maxclients", type=int, default=10000,
                   help="connections per server process (default 10000)")
    t = sub.add_parser("stop", help="stop the daemon of PATH (SIGTERM) and wait",
                       description="Send SIGTERM to the daemon of PATH and wait until it "
                                   "has exited. Exit status: 0 stopped, 1 not running, 3 "
                                   "refused (PATH is open by a process that called "
                                   "fusedb.open itself, not by fusedb serve), 4 still "
                                   "running after --timeout.")
    t.add_argument("path", nargs="?", default="fusedb-data", help=PATH_HELP)
    t.add_argument("--timeout", type=_positive, default=180.0,
                   help="seconds to wait (default 180)")
    st = sub.add_parser("stats", help="stats of the running database",
                        description="Attach to the database running at PATH, print its "
                                    "stats (workers, attached clients), detach. Exit "
                                    "status: 0 shown, 1 not running.")
    st.add_argument("path", nargs="?", default="fusedb-data", help=PATH_HELP)
    st.add_argument("--json", action="store_true", help="print them as JSON")
    d = sub.add_parser("demo", help="run a small demo (multiprocess by default)")
    d.add_argument("path", nargs="?", default="fusedb-data")
    d.add_argument("--ops", type=int, default=100_000)
    d.add_argument("--shards", type=int, default=2, help="worker processes; 0: embedded")
    d.add_argument("--processes", type=int, default=2, help="client processes")
    c = sub.add_parser("check", help="verify every file of the database (open or closed)")
    c.add_argument("path")
    r = sub.add_parser("repair", help="salvage a damaged, closed database")
    r.add_argument("path")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    u = sub.add_parser("dump", help="print manifest, segments and WAL records")
    u.add_argument("path")
    sub.add_parser("bench", help="run perf/bench.py with a progress bar (source checkout)",
                   add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return bench(argv[1:])
    args = ap.parse_args(argv)
    if args.cmd == "demo":
        return demo(args.path, args.ops, args.shards, args.processes)
    if args.cmd in ("serve", "stop", "stats"):
        return daemon_command(args)
    from fusedb.tools import check as check_mod
    if not os.path.isdir(args.path):
        print(f"fusedb: {args.path}: not a directory", file=sys.stderr)
        return 2
    if args.cmd == "check":
        return check(args.path)
    if args.cmd == "repair":
        return repair(args.path, args.json)
    for line in check_mod.dump(args.path):
        print(line)
    return 0


PATH_HELP = "the database directory (default: ./fusedb-data)"
SERVE_HELP = """Open (or recover) the database at PATH and serve it until SIGTERM,
SIGINT (Ctrl-C) or SIGHUP: processes of this host attach with
fusedb.connect(PATH) and work on its shared memory; the daemon supervises one
worker process per shard. Logs go to stderr (--detach: PATH/serve.log).

exit status: 0 stopped cleanly (with --if-not-running: or already running),
1 could not open, refused (already running: the owner's pid is named), or did
not close cleanly (nothing acknowledged is lost: the next serve recovers),
2 bad options."""


def _octal(text: str) -> int:
    try:
        v = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text}") from None
    if not 0 <= v <= 0o777:
        raise argparse.ArgumentTypeError(f"not a permission mode: {text}")
    return v


def listen_from_args(args):
    """The Redis protocol's fusedb.tools.servers.Listen from serve's flags.
    Raises ValueError (exit 2) with the message."""
    from fusedb.tools.servers import Listen
    if args.requirepass is not None and args.requirepass_file:
        raise ValueError("give --requirepass or --requirepass-file, not both")
    password = args.requirepass
    if args.requirepass_file:
        try:
            with open(args.requirepass_file, "rb") as f:
                password = f.readline().rstrip(b"\r\n")
        except OSError as e:
            raise ValueError(f"--requirepass-file: {e}") from None
        if not password:
            raise ValueError(f"--requirepass-file {args.requirepass_file}: empty password")
    elif password is not None:
        password = password.encode()
        if not password:
            raise ValueError("--requirepass: empty password")
    if password is not None and len(password) > 4096:
        # It reaches each server process through a pipe written before the
        # process starts: it must fit the pipe's buffer.
        raise ValueError(f"the password is {len(password)} bytes: at most 4096")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: not a port number")
    most = 4 * (os.cpu_count() or 1)
    if not 1 <= args.servers <= most:
        raise ValueError(f"--servers {args.servers}: from 1 to {most} (4 per CPU: more "
                         f"processes than cores add memory and start time, not speed)")
    if args.maxclients < 1:
        raise ValueError(f"--maxclients {args.maxclients}: at least 1")
    listen = Listen(args.bind, args.port, args.unixsocket and os.path.abspath(args.unixsocket),
                    args.unixsocketperm, password, args.servers, args.maxclients)
    refusal = listen.protected_mode_refusal()
    if refusal:
        raise ValueError(refusal)
    return listen


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return v


def daemon_command(args) -> int:
    from fusedb.errors import FuseDBError
    from fusedb.tools import control, serve
    args.path = os.path.abspath(args.path)
    if args.cmd == "stop":
        return control.stop(args.path, args.timeout)
    if args.cmd == "stats":
        return control.stats(args.path, args.json)
    try:
        opts = serve.options_from_args(args.shards, args.durability, args.pin, args.config,
                                        args.options, args.group)
        listen = listen_from_args(args)
    except (FuseDBError, OSError, ValueError) as e:
        print(f"fusedb serve: {e}", file=sys.stderr)
        return 2
    if args.pidfile:
        args.pidfile = os.path.abspath(args.pidfile)
        try:
            serve.check_pidfile(args.pidfile)
        except FuseDBError as e:
            print(f"fusedb serve: {e}", file=sys.stderr)
            return 2
    report = None
    if args.detach:
        try:
            parent, got = serve.detach(args.path)
        except (FuseDBError, OSError) as e:
            print(f"fusedb serve: {e}", file=sys.stderr)
            return 1
        if parent:
            return got
        report = got
    serve.setup_logging(args.log_level)
    return serve.serve(args.path, opts, args.pidfile, args.if_not_running, report, listen)


def check(path: str) -> int:
    from fusedb.tools.check import CheckBusyError, check as check_db, is_open
    live = is_open(path)
    try:
        problems = check_db(path)
    except CheckBusyError as e:
        print(f"fusedb check: {e}", file=sys.stderr)
        return 3
    for p in problems:
        print(p)
    if live:
        print("(the database is open: checked the files named by one manifest, a consistent "
              "snapshot)")
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def repair(path: str, as_json: bool) -> int:
    from fusedb.errors import InvalidArgumentError, LockedError
    from fusedb.tools.repair import repair as repair_db
    try:
        report = repair_db(path)
    except LockedError as e:
        print(f"fusedb repair: refused: {e}", file=sys.stderr)
        return 3
    except InvalidArgumentError as e:
        print(f"fusedb repair: {e}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(report.to_dict(), indent=1, sort_keys=True))
    else:
        for line in report.lines():
            print(line)
    return 1 if report.repaired else 0


if __name__ == "__main__":
    sys.exit(main())
