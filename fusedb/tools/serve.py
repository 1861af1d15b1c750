"""``fusedb serve``: the daemon.

The daemon is the router role as a service: ``fusedb serve PATH`` opens (or
recovers) the database at PATH with ``fusedb.open(PATH, shards=N)``, which
takes LOCK, creates the shared memory and starts and supervises one worker
process per shard (fusedb.router); then it waits for SIGTERM, SIGINT or SIGHUP
(a terminal hang-up; there is no reload), and closes: operations already
inside a shard lock finish, every later one gets ClosedError, each worker
merges its shard and exits, the shared memory is removed. Processes attach
with ``fusedb.connect(PATH)`` and work on the shared memory directly; the
daemon itself serves no requests.

Two ``serve`` of one PATH: LOCK decides (flock, fusedb.runtime.dirlock); the
loser refuses with exit status 1, or, with ``--if-not-running``, exits 0
("already running"): how ``connect(path, start=True)`` resolves a start race
(fusedb.api.start). ``--detach`` forks the daemon into its own session, its
stdio on PATH/serve.log, and returns once it is ready (or has failed: its
message is printed and the status is 1).

Readiness for systemd (``Type=notify``): READY=1 then STOPPING=1 are sent to
``$NOTIFY_SOCKET`` (the sd_notify protocol, systemd's sd_notify(3) man page;
a datagram on a unix socket, "@" meaning the abstract namespace). A dozen
lines of our own: the PyPI wrappers are unmaintained or need libsystemd.

Exit status of serve: 0 stopped cleanly (or, with --if-not-running, already
running), 1 could not open or close cleanly (the log says why; nothing
acknowledged is lost: the next serve recovers), 2 bad options.
``fusedb stop`` and ``fusedb stats``: fusedb.tools.control.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import sys
import tomllib


import fusedb
from fusedb.core import kernel
from fusedb.core.fileio import DIR_MODE, FILE_MODE
from fusedb.core.layout import M_SERVE_PID
from fusedb.errors import FuseDBError, InvalidArgumentError, LockedError
from fusedb.options import daemon_options
from fusedb.runtime import dirlock
from fusedb.runtime.identity import SERVE_LOG
from fusedb.tools.control import owner
from fusedb.tools.servers import Listen, ServerProcesses, bind

log = logging.getLogger("fusedb.serve")


# -- systemd readiness ----------------------------------------------------------------

def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd's ``$NOTIFY_SOCKET`` if set
    (sd_notify(3)). Returns whether it was sent; a failure is logged, not raised
    (the service works without readiness)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode(), addr)
        return True
    except OSError as e:
        log.warning("could not notify systemd at %s: %s", os.environ["NOTIFY_SOCKET"], e)
        return False


# -- serve ----------------------------------------------------------------------------

def options_from_args(shards: int | None, durability: str | None, pin: bool,
                   config: str | None, options_json: str | None,
                   group: str | None = None) -> dict:
    """The options of ``fusedb.open`` for serve: the config file's (TOML: keys
    are fusedb.options.Options fields), then the JSON object ``options_json``
    (what connect(start=True) passes), then the flags. Raises
    InvalidArgumentError (unknown names, bad values: fusedb.options.daemon_options;
    a config file that cannot be read or parsed)."""
    opts: dict = {}
    if config:
        try:
            with open(config, "rb") as f:
                opts.update(daemon_options(tomllib.load(f), f"--config {config}"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise InvalidArgumentError(f"--config {config}: {e}") from None
    if options_json:
        try:
            given = json.loads(options_json)
        except ValueError as e:
            raise InvalidArgumentError(f"--options: not JSON: {e}") from None
        opts.update(daemon_options(given, "--options"))
    if shards is not None:
        opts["shards"] = shards
    if durability is not None:
        opts["durability"] = durability
    if pin:
        opts["pin"] = True
    if group is not None:
        opts["group"] = group
    return daemon_options(opts, "options")


class _Stop:
    """SIGTERM, SIGINT or SIGHUP (the terminal of a foreground daemon hung up;
    there is no reload): note the signal and wake the waiting main thread
    (through signal.set_wakeup_fd: no race between checking and sleeping)."""

    def __init__(self):
        self.signal = 0
        self.r, self.w = os.pipe()
        os.set_blocking(self.w, False)
        signal.set_wakeup_fd(self.w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, sig, frame) -> None:
        self.signal = self.signal or sig

    def wait(self) -> str:
        """Block until a stop signal came; its name."""
        while not self.signal:
            select.select([self.r], [], [])
            os.read(self.r, 512)
        return signal.Signals(self.signal).name


def serve(path: str, opts: dict, pidfile: str | None, if_not_running: bool,
          report=None, listen: Listen | None = None) -> int:
    """Run the daemon of ``path`` with ``opts`` (fusedb.open's options) in this
    process until SIGTERM/SIGINT/SIGHUP; the exit status (module doc).
    ``pidfile``: a file to hold the pid while serving (or None).
    ``if_not_running``: exit 0 rather than refuse when ``path`` is open.
    ``report(word, text)``: tells a detaching parent "ready", "running" or
    "failed" (None when in the foreground). ``listen``: the Redis protocol's
    listeners (fusedb.tools.servers; bound once the database is open, served
    by their processes before READY, stopped before the database closes)."""
    stop = _Stop()
    path = os.path.abspath(path)
    try:
        check_path(path)
        db = fusedb.open(path, **opts)
    except LockedError as e:
        if if_not_running:
            log.info("%s is already open by another process; nothing to do", path)
            _tell(report, "running", "")
            return 0
        msg = f"refused: {path} is already open{_by(owner(path))}: {e}"
        log.error("%s", msg)
        _tell(report, "failed", msg)
        return 1
    except (FuseDBError, OSError) as e:
        log.error("cannot open %s: %s", path, e)
        _tell(report, "failed", f"cannot open {path}: {e}")
        return 1
    status = 0
    interrupted = False
    wrote_pidfile = False
    redis = None
    try:
        db._store.meta.hdr[M_SERVE_PID] = os.getpid()
        if listen is not None and listen.wanted:
            try:
                redis = start_servers(path, listen, opts, lambda: stop.signal != 0)
            except (FuseDBError, OSError) as e:
                if stop.signal:     # SIGTERM or Ctrl-C while starting: a clean stop, exit 0
                    log.info("%s", e)
                    _tell(report, "failed", str(e))
                    interrupted = True
                else:
                    log.error("%s", e)
                    _tell(report, "failed", str(e))
                    status = 1
        if pidfile and not status and not interrupted:
            try:
                _write_pidfile(pidfile)
                wrote_pidfile = True
            except OSError as e:
                log.error("cannot write the pid file: %s; stopping", e)
                _tell(report, "failed", f"cannot write the pid file: {e}")
                status = 1
        if not status and not interrupted:
            s = db.stats()
            log.info("serving %s: pid %d, %d shard worker(s) (pids %s), durability %s, %s; "
                     "attach with fusedb.connect(%r)", path, os.getpid(), len(s["workers"]),
                     ", ".join(str(w["pid"]) for w in s["workers"]),
                     db._store.opts.durability, kernel.describe(), path)
            notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving {path}")
            _tell(report, "ready", "")
            why = stop.wait()
            log.info("%s: stopping (clients get ClosedError; each shard merges)", why)
            notify("STOPPING=1")
    finally:
        if redis is not None:
            redis.stop()
        if wrote_pidfile:
            _remove(pidfile)
        status = max(status, _close(db))
    if not status:
        log.info("stopped cleanly")
    return status


class _Redis:
    """The listeners and server processes of the Redis protocol."""

    def __init__(self, listeners, procs):
        self.listeners = listeners
        self.procs = procs

    def stop(self) -> None:
        try:
            if self.procs is not None:
                self.procs.stop()
        finally:
            self.listeners.close()


def start_servers(path: str, listen: Listen, opts: dict, stopping=lambda: False) -> _Redis:
    """Bind ``listen``'s sockets and start the server processes (ready when
    this returns). Raises OSError or FuseDBError with a one-line message
    (also when ``stopping()`` turns true meanwhile); nothing is left open then."""
    listeners = bind(listen)
    redis = _Redis(listeners, None)
    try:
        durability = opts.get("durability", "interval")
        config = {"save": "", "appendonly": "no" if durability == "none" else "yes",
                  "appendfsync": {"sync": "always", "interval": "everysec"}.get(
                      durability, "no"),
                  "port": listen.port, "bind": listen.bind,
                  "unixsocket": os.path.abspath(listen.unixsocket) if listen.unixsocket
                  else "", "unixsocketperm": f"{listen.unixsocketperm:o}",
                  "maxclients": listen.maxclients, "databases": 1}
        redis.procs = ServerProcesses(path, listen, listeners, config)
        redis.procs.start(stopping=stopping)
    except BaseException:
        redis.stop()
        raise
    return redis


def _close(db) -> int:
    """Close the database; 0, or 1 (logged) if it did not close cleanly."""
    try:
        db.close()
        return 0
    except (FuseDBError, OSError) as e:
        log.error("close did not finish cleanly: %s (nothing acknowledged is lost: the "
                  "next serve recovers)", e)
        return 1


def _by(own: tuple[int, int, bool] | None) -> str:
    if not own or not own[0]:
        return ""
    return f" by pid {own[0]}" + (" (a fusedb serve daemon)" if own[1] == own[0] else "")


def _tell(report, word: str, text: str) -> None:
    if report is not None:
        report(word, text)


def _write_pidfile(name: str) -> None:
    tmp = f"{name}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, name)


def _remove(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def detach(path: str) -> tuple[bool, object]:
    """Fork the daemon off into its own session (working directory /) with its
    stdio on PATH/serve.log (``path``: absolute; the log is opened here,
    before the fork, so a failure is reported once, by the caller: OSError).
    In the parent: (True, exit status), once the child said it is ready (0,
    after printing its pid), already running (0) or failed (1, its message on
    stderr), or at Ctrl-C (130; the daemon goes on). In the child: (False,
    report function for :func:`serve`)."""
    logname = os.path.join(path, SERVE_LOG)
    check_path(path)
    os.makedirs(path, DIR_MODE, exist_ok=True)
    try:
        dirlock.check_directory(path)    # never write a log into a foreign directory
    except LockedError:
        pass                             # someone's database: the daemon says "running"
    fd = os.open(logname, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        os.close(fd)
        try:
            with os.fdopen(r, "rb") as f:
                msg = f.read().decode(errors="replace")
        except KeyboardInterrupt:
            print(f"fusedb serve: interrupted; the daemon (pid {pid}) goes on starting "
                  f"(log: {logname}; fusedb stop {path} stops it)", file=sys.stderr)
            return True, 128 + signal.SIGINT
        word, _, text = msg.partition(" ")
        if word == "ready":
            print(f"fusedb serve: daemon pid {pid} serving {path} (log: {logname})")
            return True, 0
        if word == "running":
            return True, 0
        os.waitpid(pid, 0)
        print(f"fusedb serve: {text or 'the daemon exited while starting; see ' + logname}",
              file=sys.stderr)
        return True, 1
    os.close(r)
    os.setsid()
    os.chdir("/")          # hold no mount busy (PATH is absolute: fusedb.tools.cli)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)

    def report(word: str, text: str) -> None:
        """Tell the parent once. It may be gone (killed, Ctrl-C, connect's
        timeout): the daemon serves on regardless."""
        nonlocal w
        if w >= 0:
            try:
                os.write(w, f"{word} {text}".encode())
            except BrokenPipeError:
                log.info("the process that started this daemon is gone; serving on")
            os.close(w)
            w = -1
    return False, report


def check_path(path: str) -> None:
    """Raise NotADirectoryError (with a message for the operator) if ``path``
    exists and is not a directory."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{path} is not a directory (a database is a directory)")


def check_pidfile(name: str) -> None:
    """Raise InvalidArgumentError if the pid file ``name`` cannot be written
    (checked before the database opens; written once it is open)."""
    where = os.path.dirname(name) or "."
    if not os.path.isdir(where) or not os.access(where, os.W_OK):
        raise InvalidArgumentError(f"--pidfile {name}: {where} is not a writable directory")


def setup_logging(level: str) -> None:
    """Log lines to stderr: time, level, pid, message."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s fusedb[%(process)d] %(message)s")
