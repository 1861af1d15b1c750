"""``fusedb.connect(path, start=True)``: attach, starting a daemon first when
none runs.

Any number of processes may do this at once. Each one that finds no database
running starts ``python -m fusedb serve PATH --detach --if-not-running``
(fusedb.tools.serve), which returns once its daemon is ready. The daemons race
for the directory's LOCK (flock): exactly one wins and opens the database; the
others see LockedError and exit 0 at once ("already running"). Every starter
then attaches, waiting while the winner's open is still in progress (attach
raises a transient NotRunningError until the meta block is marked ready). A
daemon that dies before it is ready is replaced by the next attempt, until
``timeout``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

from fusedb.errors import InvalidArgumentError, NotRunningError
from fusedb.options import daemon_options
from fusedb.router.spawn import child_env

log = logging.getLogger("fusedb")


def serve_command(path: str, options: dict) -> list[str]:
    """The command line of a detached daemon of ``path`` with ``options``
    (fields of fusedb.options.Options; validated here: InvalidArgumentError)."""
    opts = daemon_options(options, "connect(start=True)")
    try:
        blob = json.dumps(opts)
    except TypeError as e:
        raise InvalidArgumentError(f"connect(start=True) passes options to the daemon as "
                                   f"JSON; this one cannot be: {e}") from None
    return [sys.executable, "-m", "fusedb", "serve", os.path.abspath(path), "--detach",
            "--if-not-running", "--options", blob]


def warn_if_other_options(path: str, running: dict, asked: dict) -> None:
    """Log a warning when the running daemon's options (``running``) differ from
    those ``connect(start=True)`` was given (``asked``, validated): they apply
    only to a daemon that call starts, and a daemon outlives its applications."""
    other = {k: running.get(k) for k, v in asked.items() if running.get(k) != v}
    if other:
        log.warning("%s: the running daemon has %s, not the %s asked for: options apply "
                    "only to a daemon connect(start=True) starts; to change them, stop it "
                    "(fusedb stop %s) and connect again", path,
                    ", ".join(f"{k}={v!r}" for k, v in sorted(other.items())),
                    ", ".join(f"{k}={asked[k]!r}" for k in sorted(other)), path)


def start_daemon(path: str, options: dict, timeout: float) -> None:
    """Start a detached daemon of ``path`` unless one is running; returns when it
    is ready or another process holds the database. Raises NotRunningError (with
    the daemon's message) if it could not start, or did not answer within
    ``timeout`` seconds."""
    try:
        out = subprocess.run(serve_command(path, options), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(),
                             start_new_session=True, timeout=timeout, text=True)
    except subprocess.TimeoutExpired:
        raise NotRunningError(f"fusedb serve {path} did not get ready within {timeout:.1f} s "
                              f"(see {os.path.join(path, 'serve.log')})") from None
    if out.returncode != 0:
        raise NotRunningError(f"could not start fusedb serve {path}: "
                              f"{out.stderr.strip() or f'exit status {out.returncode}'}",
                              transient=False)


def connect_starting(path: str, attach, options: dict, timeout: float):
    """``attach(path, wait)`` (returns a handle, waiting up to ``wait`` seconds
    for an open in progress, or raises NotRunningError); when nothing
    runs at ``path``, start a daemon with ``options`` and attach to it. Raises
    NotRunningError if the database runs embedded, if the daemon cannot start
    (its message), or if no daemon is ready within ``timeout`` seconds;
    InvalidArgumentError for bad ``options``, also when a daemon runs. A
    running daemon whose options differ from ``options`` is used as it is,
    with a warning (logging, "fusedb") naming the differences."""
    asked = daemon_options(options, "connect(start=True)")   # checked even if one runs
    asked = {k: asked[k] for k in options if k in asked}
    deadline = time.monotonic() + timeout
    started_at = None
    while True:
        try:
            store = attach(path, max(deadline - time.monotonic(), 0.0))
            warn_if_other_options(path, store.meta.get_options(), asked)
            return store
        except NotRunningError as e:
            if not e.transient:
                raise
            last = e
        now = time.monotonic()
        if now > deadline:
            raise NotRunningError(f"no daemon of {path} became ready within {timeout:.1f} s: "
                                  f"{last}")
        # Another process's daemon may still be opening: wait for it a while before
        # starting one again (which is harmless: it exits if LOCK is held).
        if started_at is None or now - started_at > 2.0:
            start_daemon(path, options, max(deadline - now, 0.1))
            started_at = time.monotonic()
        else:
            time.sleep(0.02)
