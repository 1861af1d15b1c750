"""The ``fusedb`` command: run a database as a daemon, look at it, check and
repair it, run the demo and the benchmark. Its help texts are :data:`HELP` and
:data:`EXIT_STATUS` (plain text: argparse prints them as they are).

Every command exits non-zero when it could not do what was asked (:data:`EXIT_STATUS`);
a handled condition is one line on stderr, never a traceback. Output to a pipe whose reader has gone
(``fusedb dump PATH | head``) ends the command quietly with status 141, as the
shell reports for ``seq`` or ``cat`` killed by SIGPIPE (:func:`guarded`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable

from fusedb import __version__
from fusedb.core import kernel


HELP = """\
The FuseDB command: run a database as a daemon, look at it, check and repair it.

  fusedb serve [PATH]   run the database at PATH (default ./fusedb-data) as a daemon:
                        it owns the database and supervises the shard workers;
                        processes attach with fusedb.connect(PATH); SIGTERM or
                        Ctrl-C stops it cleanly
  fusedb stop [PATH]    stop the daemon of PATH; waits until it is down
  fusedb stats [PATH]   the running database's stats, attached clients included
                        (--json for JSON)
  fusedb demo [PATH]    a rate-limiter/session demo on PATH (default ./fusedb-data):
                        2 shard worker processes, 2 client processes
                        (--shards 0 runs it embedded in one process)
  fusedb bench [...]    FuseDB side by side with rocksdict, lmdb, sqlite3, diskcache
                        and Redis, a progress bar on a terminal (pip install
                        '.[bench]' in the checkout; fusedb bench --help: options, columns)
  fusedb check PATH     verify every file of the database (open or closed)
  fusedb repair PATH    salvage a damaged, closed database (--json for a JSON report)
  fusedb dump PATH      print manifest, segments and WAL records
  fusedb --version      the version and which path runs: "compiled kernel" or
                        "pure Python (<why>)"

Each command's --help gives its options and exit status."""

EXIT_STATUS = """\
exit status of every command: 0 done, 2 bad options, 130 interrupted (Ctrl-C),
141 its output went to a pipe whose reader has gone (as for a program killed by
SIGPIPE). serve: 1 could not open, or refused (already running), or did not close
cleanly, 2 bad options. stop: 1 not running, 3 refused (not a daemon's), 4
still running after --timeout. stats: 1 not running. check: 1 damage found, 2
not a directory or not a FuseDB database, 3 no consistent snapshot of a very
busy open database could be taken (check again). repair (as fsck's): 0 nothing
to repair (nothing changed), 1 repaired (damaged files set aside in PATH/lost/),
2 not a directory or no FuseDB files in it, 3 refused: the database is open, 8
the disk failed meanwhile (run it again).
dump: 1 a damaged file stopped the dump (fusedb check PATH names every
problem), 2 not a directory or not a FuseDB database. demo: 1 the database
could not be opened. bench: fusedb bench --help."""

#: The exit status of a command whose standard output was a pipe closed by its
#: reader: 128 + SIGPIPE, what a shell reports for ``seq 1 1000000 | head``.
EPIPE_STATUS = 128 + signal.SIGPIPE
#: The exit status of a command interrupted by Ctrl-C: 128 + SIGINT, as a shell's.
SIGINT_STATUS = 128 + signal.SIGINT


def guarded(command: Callable[[], int]) -> int:
    """Run ``command`` (returning an exit status) as a command-line program:
    its output flushed; BrokenPipeError (the reader of a pipe on stdout has
    gone: ``| head``) ends it quietly with :data:`EPIPE_STATUS`, after pointing
    stdout at /dev/null so the interpreter's final flush does not complain;
    KeyboardInterrupt (Ctrl-C) ends it with :data:`SIGINT_STATUS`, no traceback.
    SystemExit (argparse's --help, bad options) passes, its output flushed first.
    A command's ``finally`` blocks and ``with`` exits have run by then (a
    database it had open is closed)."""
    try:
        try:
            return command()
        finally:
            sys.stdout.flush()      # what is still buffered: EPIPE shows here, too
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EPIPE_STATUS
    except KeyboardInterrupt:
        return SIGINT_STATUS


def main(argv: list[str] | None = None) -> int:
    """The ``fusedb`` command with command-line ``argv`` (default sys.argv[1:]);
    its exit status (:data:`EXIT_STATUS`). Bad options raise SystemExit(2), as
    argparse does."""
    return guarded(lambda: command(sys.argv[1:] if argv is None else argv))


def command(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="fusedb", description=HELP, epilog=EXIT_STATUS,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version",
                    version=f"fusedb {__version__}, {kernel.describe()}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
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
    d = sub.add_parser("demo", help="run a small demo (multiprocess by default)",
                       description="A rate limiter and a session store on PATH (created if "
                                   "missing; a running daemon's database is attached to). "
                                   "Exit status: 0 done, 1 the database could not be opened.")
    d.add_argument("path", nargs="?", default="fusedb-data", help=PATH_HELP)
    d.add_argument("--ops", type=_at_least(1), default=100_000,
                   help="rate-limiter requests (default 100000)")
    d.add_argument("--shards", type=_at_least(0), default=2,
                   help="worker processes; 0: embedded (default 2)")
    d.add_argument("--processes", type=_at_least(1), default=2,
                   help="client processes (default 2)")
    c = sub.add_parser("check", help="verify every file of the database (open or closed)",
                       description="Verify every file of the database at PATH: manifest, "
                                   "segments, WAL; safe while it runs. Exit status: 0 "
                                   "healthy, 1 damage found, 2 not a directory or not a "
                                   "FuseDB database, 3 no consistent snapshot of a very busy "
                                   "open database could be taken (check again).")
    c.add_argument("path", help="the database directory")
    r = sub.add_parser("repair", help="salvage a damaged, closed database",
                       description="Salvage the damaged, closed database at PATH: damaged "
                                   "files are set aside in PATH/lost/, the rest opens again. "
                                   "Exit status (as fsck's): 0 nothing to repair, 1 repaired, "
                                   "2 not a directory or no FuseDB files in it, 3 refused: "
                                   "the database is open, 8 the disk failed meanwhile (run "
                                   "it again).")
    r.add_argument("path", help="the database directory")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    u = sub.add_parser("dump", help="print manifest, segments and WAL records",
                       description="Print the manifest, every segment entry and every WAL "
                                   "record of the database at PATH (read only; safe while it "
                                   "runs). Exit status: 0 printed, 1 a damaged file stopped "
                                   "the dump (fusedb check PATH names every problem), 2 not a "
                                   "directory or not a FuseDB database.")
    u.add_argument("path", help="the database directory")
    sub.add_parser("bench", help="FuseDB side by side with other engines (fusedb bench --help)",
                   add_help=False)
    if argv[:1] == ["bench"]:       # its own options and help: fusedb.tools.bench.command
        from fusedb.tools.bench.command import main as bench
        return bench((["--progress"] if sys.stderr.isatty() else []) + argv[1:])
    args = ap.parse_args(argv)
    if args.cmd == "demo":
        from fusedb.tools.demo import demo
        return demo(args.path, args.ops, args.shards, args.processes)
    if args.cmd in ("serve", "stop", "stats"):
        return daemon_command(args)
    if args.cmd == "repair":
        return repair(args.path, args.json)
    refusal = not_a_database(args.path)
    if refusal:
        print(f"fusedb {args.cmd}: {refusal}", file=sys.stderr)
        return 2
    if args.cmd == "check":
        return check(args.path)
    return dump(args.path)


def not_a_database(path: str) -> str | None:
    """Why ``path`` is not a database to check or dump (one line), or None.
    Changes nothing (fusedb.runtime.identity.check_directory, as open decides)."""
    from fusedb.errors import CorruptionError, NotADatabaseError
    from fusedb.runtime.identity import check_directory
    if not os.path.exists(path):
        return f"{path}: no such directory"
    try:
        if check_directory(path) == "new":
            return f"{path}: not a FuseDB database (an empty directory)"
    except NotADirectoryError:
        return f"{path}: not a directory"
    except NotADatabaseError:
        return f"{path}: not a FuseDB database (no FUSEDB, MANIFEST or WAL file of FuseDB's)"
    except CorruptionError:
        pass        # a damaged identity file: check names it, dump shows the rest
    except OSError as e:
        return f"{path}: {e.strerror}"
    return None


def dump(path: str) -> int:
    """``fusedb dump PATH``; the exit status (:data:`EXIT_STATUS`)."""
    from fusedb.errors import FuseDBError
    from fusedb.tools.check import dump as dump_lines
    try:
        for line in dump_lines(path):
            print(line)
    except BrokenPipeError:
        raise                       # the reader has gone: guarded() ends quietly
    except (FuseDBError, OSError) as e:
        sys.stdout.flush()
        print(f"fusedb dump: stopped: {e} (fusedb check {path} names every problem)",
              file=sys.stderr)
        return 1
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


def _at_least(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        v = int(text)
        if v < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {text}")
        return v
    return parse


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
    except OSError as e:
        print(f"fusedb repair: {e} (every step is safe to repeat: run it again once the "
              f"disk is fixed)", file=sys.stderr)
        return 8
    if as_json:
        print(json.dumps(report.to_dict(), indent=1, sort_keys=True))
    else:
        for line in report.lines():
            print(line)
    return 1 if report.repaired else 0


if __name__ == "__main__":
    sys.exit(main())
