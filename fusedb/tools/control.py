"""``fusedb stop`` and ``fusedb stats``: the operator commands of a running
database (its daemon: fusedb.tools.serve).

Exit status of stop: 0 stopped, 1 not running, 3 refused (the owner is not a
``fusedb serve`` daemon), 4 still running after --timeout.
Exit status of stats: 0 shown, 1 not running.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import posix_ipc
import psutil

import fusedb
from fusedb.core.layout import M_ROUTER_PID, M_SERVE_PID, M_STATE, STATE_OPEN
from fusedb.errors import NotRunningError, PermissionDeniedError
from fusedb.runtime.identity import SERVE_LOG
from fusedb.shm import region
from fusedb.shm.locks import alive
from fusedb.shm.meta import Meta


def owner(path: str) -> tuple[int, int, bool] | None:
    """(router pid, daemon pid or 0, open) of the database at ``path`` read from
    its meta block, or None when it has none (never opened multiprocess, or
    closed). Takes no lock and attaches nothing else."""
    try:
        meta = Meta(region.name(region.tag_for(os.path.abspath(path)), "meta"))
    except (posix_ipc.ExistentialError, RuntimeError, ValueError):
        return None        # none, being created, or of another version: no owner to name
    try:
        h = meta.hdr
        return h[M_ROUTER_PID], h[M_SERVE_PID], h[M_STATE] == STATE_OPEN
    finally:
        meta.close()


def stop(path: str, timeout: float) -> int:
    """``fusedb stop PATH``: SIGTERM to the database's daemon; wait until it has
    exited (at most ``timeout`` seconds). The exit status (module doc)."""
    try:
        own = owner(path)
    except posix_ipc.PermissionsError:
        print(f"fusedb stop: no permission to read the shared memory of {path}: run this as "
              f"the user that runs its daemon", file=sys.stderr)
        return 1
    router, daemon, is_open = own if own is not None else (0, 0, False)
    if daemon and not _is_serve(daemon):
        print(f"fusedb stop: no daemon is running for {path} (its daemon, pid {daemon}, died "
              f"without closing: `fusedb serve {path}` recovers everything acknowledged)",
              file=sys.stderr)
        return 1
    if not daemon:
        if is_open and router and alive(router):
            print(f"fusedb stop: refused: {path} is open by pid {router}, a process that "
                  f"called fusedb.open itself (not fusedb serve); stop that process",
                  file=sys.stderr)
            return 3
        print(f"fusedb stop: no daemon is running for {path}", file=sys.stderr)
        return 1
    t = time.monotonic()
    try:
        os.kill(daemon, signal.SIGTERM)       # a daemon already closing: wait for it
    except ProcessLookupError:
        pass
    except PermissionError:
        print(f"fusedb stop: no permission to signal the daemon (pid {daemon}): run this as "
              f"its user", file=sys.stderr)
        return 1
    # Not our child: poll. A zombie has exited (its parent, init or a subreaper,
    # has yet to reap it).
    while alive(daemon):
        if time.monotonic() - t > timeout:
            print(f"fusedb stop: the daemon (pid {daemon}) is still running after "
                  f"{timeout:g} s (see {os.path.join(path, SERVE_LOG)} or its journal)",
                  file=sys.stderr)
            return 4
        time.sleep(0.01)
    print(f"stopped the daemon of {path} (pid {daemon}) in {time.monotonic() - t:.2f} s")
    return 0


def _is_serve(pid: int) -> bool:
    """Whether ``pid`` is a live ``fusedb serve`` process. The pid of a daemon
    that died stays in its meta block until the next open, and may have been
    reused since: ``fusedb stop`` must never signal a stranger. A process whose
    command line may not be read counts as one (signalling it then fails)."""
    if not alive(pid):
        return False
    try:
        return "serve" in psutil.Process(pid).cmdline()
    except psutil.AccessDenied:
        return True
    except psutil.NoSuchProcess:
        return False


def stats(path: str, as_json: bool) -> int:
    """``fusedb stats PATH``: the running database's ``stats()``, as a table or
    JSON. The exit status (module doc)."""
    try:
        db = fusedb.connect(path)
    except (NotRunningError, PermissionDeniedError) as e:
        print(f"fusedb stats: {e}", file=sys.stderr)
        return 1
    try:
        s = db.stats()
        s["options"] = db._store.meta.get_options()       # the daemon's own
        own = owner(path)
    finally:
        db.close()
    s["router_pid"], s["daemon_pid"] = (own[0], own[1]) if own else (0, 0)
    for c in s.get("clients", []):
        c["resp_server"] = resp_server(c["pid"])     # None: not a server process
    if as_json:
        print(json.dumps(s, indent=1, sort_keys=True, default=str))
        return 0
    for line in table(s):
        print(line)
    return 0


def table(s: dict) -> list[str]:
    """The human view of a stats dict: one ``name  value`` line per scalar, then
    the shards (keys, bytes, writes, ...), the workers and the attached clients."""
    lines = []
    lists = {k: v for k, v in s.items() if isinstance(v, (list, dict))}
    width = max(len(k) for k in s)
    for k, v in sorted(s.items()):
        if k in lists:
            continue
        lines.append(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    for sh in s.get("shards", []):
        lines.append(f"shard {sh.get('shard')}: " + _fields(sh, ("shard",)))
    for w in s.get("workers", []):
        lines.append(f"worker: shard {w.get('shard')}, pid {w.get('pid')}, "
                     + _fields(w, ("shard", "pid")))
    if s.get("options"):
        lines.append("options: " + ", ".join(f"{k}={v}" for k, v in sorted(s["options"].items())))
    for c in s.get("clients", []):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c["since"]))
        lines.append(f"client: pid {c['pid']}, attached since {since}"
                     + (" (this command)" if c["pid"] == os.getpid() else
                        "" if c.get("resp_server") is None else
                        f" (Redis protocol server process {c['resp_server']})"))
    return lines


def _fields(row: dict, skip: tuple) -> str:
    """``name value, ...`` of ``row``'s entries but ``skip``, sorted by name."""
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in sorted(row.items()) if k not in skip)


def resp_server(pid: int) -> int | None:
    """The index of the daemon's Redis protocol server process ``pid``
    (fusedb.resp.process), or None if it is none (or gone)."""
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return None
    if "fusedb.resp.process" not in argv or "--index" not in argv[:-1]:
        return None
    return int(argv[argv.index("--index") + 1])
