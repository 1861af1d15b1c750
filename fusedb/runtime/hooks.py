"""Every process-wide side effect of FuseDB, in one place: signal handlers
(fusedb.runtime.signals), the ``atexit`` close of databases still open, and the
``fork()`` hooks. Nothing is registered at import time: the entry points
register them (:func:`opened` from ``fusedb.open``/``fusedb.connect``,
:func:`worker_process` from the worker process's main).

A forked child inherits its parent's open databases: they are the parent's to
close. In the child each one is marked inherited (it drops its copy of LOCK and
never closes, flushes or unlinks anything), each API handle is told (a
multiprocess one re-attaches on first use), and SIGTERM gets its default action
back until the child attaches itself.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import weakref

from fusedb.runtime import signals

#: Roles still open here (objects with ``close()`` and ``after_fork()``).
_open: weakref.WeakSet = weakref.WeakSet()
#: API handles (objects with ``_after_fork()``), told about a fork.
_handles: weakref.WeakSet = weakref.WeakSet()
_registered = False
_lock = threading.Lock()


def _register() -> None:
    global _registered
    with _lock:
        if _registered:
            return
        _registered = True
        atexit.register(_close_open)
        os.register_at_fork(after_in_child=_after_fork_in_child)


def opened(role, owner: bool) -> None:
    """An entry point opened (``owner``: embedded or router) or attached
    (client) ``role``: close it at interpreter exit if still open, tell it about
    a fork, and install the signal handlers (fusedb.runtime.signals). Call
    :func:`closed` when it closes."""
    _register()
    _open.add(role)
    signals.install(owner)


def closed(role) -> None:
    """``role`` closed (or was inherited): nothing to do for it at exit."""
    _open.discard(role)


def owned_here(path: str):
    """The role (embedded or router) that opened the database at ``path`` (a
    real path) in this process and is still open, or None."""
    return next((r for r in list(_open) if r.path == path and r.lockfile is not None), None)


def handle(h) -> None:
    """Tell API handle ``h`` (its ``_after_fork()``) about a fork."""
    _register()
    _handles.add(h)


def worker_process() -> None:
    """The worker process's own: Ctrl-C, ``timeout``, ``kill -TERM -PGID``, a
    terminal's hang-up (SIGHUP) and a systemd stop reach the whole process
    group: the router handles them and stops the workers in order, so a worker
    must not die of them on its own (if the router dies instead, the worker
    notices and exits)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _close_open() -> None:
    # Databases still open at interpreter exit are closed (flushed, shared memory
    # removed) so that a script that forgets close() leaves nothing in /dev/shm.
    for role in list(_open):
        role.close()


def _after_fork_in_child() -> None:
    signals.after_fork_in_child()
    for role in list(_open):
        role.after_fork()
    _open.clear()
    for h in list(_handles):
        h._after_fork()
