"""SIGINT and SIGTERM handling in every process that opens or attaches to a database.

Python runs a signal handler between two bytecodes of the main thread, and the
default SIGINT handler raises KeyboardInterrupt right there. If that is inside a
FuseDB critical section (a buffer half-updated under a shard lock), the lock is
released on a half-written buffer, or, for a shared-memory lock, not released at
all. So every process that opens or attaches to a database (embedded, router,
client) installs, in place of the *default* handlers only, a handler that never
raises inside FuseDB code:

* Interrupted in application code (no frame of the interrupted stack belongs to
  the fusedb package, up to the nearest application callback, :func:`call_user`),
  it acts at once, as the default handler would.
* Interrupted inside FuseDB, it notes the signal and marks every executor of the
  process (:func:`watch`): ``PENDING`` joins the executor's set of callback
  threads (``Executor.fn_threads``), whose emptiness every operation already
  tests (the compiled kernel too) to leave its fast path. So the *next*
  operation of the process, on any handle, calls :func:`raise_pending` before
  it does anything, with no lock held (``Executor.reentered``): the operation in
  progress returns, whole, and the next one raises. The hot path does no more
  work than before: the test it takes was already there.
* For an application that does not call FuseDB again (it sleeps, blocks on
  input, computes), a daemon thread also re-sends the signal to the main thread
  every 10 ms (``pthread_kill``, which interrupts a blocking call) while it is
  pending: the first that lands in application code acts. Long waits inside
  FuseDB that hold no lock (a write stalled for buffer memory or WAL room) call
  :func:`raise_pending` too.

What acting means:

* SIGINT raises KeyboardInterrupt, as by default.
* SIGTERM, in a process that owns a database (embedded, router), raises
  SystemExit(128 + 15), so the interpreter exits through atexit, which closes
  the database cleanly (merges, removes its shared memory). By default SIGTERM
  kills the process on the spot, leaving the shutdown to the next open's
  recovery.
* An attached client keeps SIGTERM's default action: it ends at once, wherever
  it is. A SystemExit raised in a client can be swallowed (inside a
  ``__del__``), caught, or followed by a block on something that never comes;
  with a Python handler for SIGTERM in clients, ``multiprocessing``'s
  ``Pool.terminate()`` hung here about once in 20 runs of
  tests/recipes/pool_counter.py (a worker that never ended), never with the
  default action (0 in 30). A client killed inside a critical section is what
  the locks are built for: the shard's worker repairs the shard from the WAL,
  as after SIGKILL, and nothing acknowledged is lost; its client slot is
  dropped as a dead process's. SIGINT in a client acts as in an owner.
* A ``fork()``ed child of an owner owns no database: it gets SIGTERM's default
  action back at fork.

Installed by fusedb.runtime.hooks (which also registers :func:`after_fork_in_child`),
called by the entry points that open or attach. A handler the application
installed itself is left alone: if it raises, it can interrupt a critical
section (documented in docs/design.md).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import weakref

# The fusedb package directory (this file is fusedb/runtime/signals.py).
_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
#: Marker put in every watched executor's ``fn_threads`` while a signal waits
#: to act (not a thread id: those are positive).
PENDING = -1
#: Seconds between two re-sends of a pending signal to the main thread.
RESEND = 0.01
_installed = False
#: Signals noted inside FuseDB code, not acted on yet.
_pending: set[int] = set()
#: Executors (objects with ``fn_threads``) whose operations check for a pending signal.
_watched: weakref.WeakSet = weakref.WeakSet()
#: Signals re-sent and not handled yet (a re-send that arrives after the signal
#: acted is dropped, not taken for a second Ctrl-C).
_inflight: set[int] = set()


def call_user(fn, arg):
    """Call application code ``fn(arg)`` from inside FuseDB (``update()``'s fn,
    which runs under a shard lock): the caller's frames are written so that any
    exception out of ``fn`` releases everything, so a signal landing in ``fn``
    (or in what it calls outside FuseDB) acts there at once rather than being
    deferred until ``fn`` returns (an ``fn`` that never returns stays
    interruptible)."""
    return fn(arg)


_CALL_USER = call_user.__code__


def watch(executor) -> None:
    """Have ``executor`` (an object with a ``fn_threads`` set, weakly held)
    marked with :data:`PENDING` while a signal waits to act."""
    _watched.add(executor)
    if _pending:
        executor.fn_threads.add(PENDING)


def _inside_fusedb(frame) -> bool:
    """Whether ``frame`` (the interrupted one) or a frame it was called from is
    FuseDB code, up to the nearest application callback (:func:`call_user`)."""
    first = True
    while frame is not None:
        code = frame.f_code
        if code is _CALL_USER and not first:
            return False        # application code called back by FuseDB: it may raise
        if code.co_filename.startswith(_PKG):
            return True
        first = False
        frame = frame.f_back
    return False


def _resender(signum: int, main: int) -> None:
    # Until the signal acts (a second signal of the same kind meanwhile needs
    # no thread of its own). pthread_kill: a signal sent to the process may be
    # taken by any thread, and only the main thread's blocking call is
    # interrupted for the handler to run.
    while signum in _pending:
        time.sleep(RESEND)
        if signum in _pending:
            _inflight.add(signum)
            signal.pthread_kill(main, signum)


def _handler(signum, frame) -> None:
    if signum in _inflight:
        _inflight.discard(signum)
        if signum not in _pending:
            return      # a re-send that crossed the signal's acting: not a new signal
    if _inside_fusedb(frame):
        if signum not in _pending:
            _pending.add(signum)
            for x in list(_watched):
                x.fn_threads.add(PENDING)
            threading.Thread(target=_resender, name="fusedb-signal",
                             args=(signum, threading.main_thread().ident), daemon=True).start()
        return
    _act(signum)


def _act(signum: int) -> None:
    _pending.discard(signum)
    if not _pending:
        for x in list(_watched):
            x.fn_threads.discard(PENDING)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    sys.exit(128 + signum)


def raise_pending() -> None:
    """Act now on a signal the handler deferred, as it would have in application
    code: KeyboardInterrupt for SIGINT, SystemExit(128 + signum) for SIGTERM.
    Called where FuseDB holds no lock and has nothing half done: at the start of
    every operation while one is pending (``Executor.reentered``), and in waits
    that can last (a write waiting up to ``write_timeout`` for buffer memory or
    WAL room). Main thread only (handlers run there); elsewhere it does nothing."""
    if not _pending or threading.current_thread() is not threading.main_thread():
        return
    _act(signal.SIGINT if signal.SIGINT in _pending else min(_pending))


def install(owner: bool) -> None:
    """Install the deferring handler for SIGINT and SIGTERM where the defaults
    are in place (main thread only; elsewhere signals cannot be set).
    ``owner``: this process owns a database (embedded, router): only then is
    SIGTERM handled (a client keeps its default action: see the module doc)."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    if owner and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _handler)
    if _installed:
        return
    _installed = True
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)


def after_fork_in_child() -> None:
    """In a fork()ed child (called by fusedb.runtime.hooks): see below."""
    # A fork()ed child (a gunicorn worker, a fork pool's worker) owns no
    # database: SIGTERM's default action (see above). Signals the parent had
    # deferred are the parent's.
    _pending.clear()
    _inflight.clear()
    for x in list(_watched):
        x.fn_threads.discard(PENDING)
    try:
        if signal.getsignal(signal.SIGTERM) is _handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:
        pass     # forked from a thread other than the main one: nothing was inherited there
