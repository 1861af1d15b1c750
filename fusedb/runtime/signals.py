"""SIGTERM and SIGINT handling for the process that opens a database.

Python runs a signal handler between two bytecodes of the main thread, and the
default SIGINT handler raises KeyboardInterrupt right there. If that is inside a
FuseDB critical section (a buffer half-updated under a shard lock), the lock is
released on a half-written buffer, or, for a shared-memory lock, not released at
all. So every process that opens or attaches to a database (embedded, router,
client) installs, in place of the *default* handlers only, handlers that never raise
inside FuseDB code: if the interrupted frame or any frame above it belongs to the
fusedb package, the signal is sent again to the main thread every 10 ms (by a
daemon thread, with ``pthread_kill``, so it interrupts a blocking call there)
until the handler finds the thread back in application code and raises, or
until FuseDB code reaches a safe point that can last and calls
:func:`raise_pending` (a write stalled for buffer memory or WAL room).

* SIGINT raises KeyboardInterrupt, as by default.
* SIGTERM, in a process that owns a database (embedded, or the router of a
  multiprocess one), raises SystemExit(128 + 15), so the interpreter exits
  through atexit, which closes the database cleanly (by default SIGTERM kills the
  process on the spot, leaving the shutdown to the next open's recovery).
  Attached clients keep the default: a Python handler that raises can have its
  exception swallowed (raised inside a ``__del__``, say), and a client such as a
  ``multiprocessing`` pool worker, blocked afterwards on a lock its parent holds,
  then never exits (seen: ``Pool.terminate()`` hanging in the test suite). A
  client killed by SIGTERM is like one killed by SIGKILL: if it held a shard
  lock, the shard's worker repairs the shard from the WAL. A ``fork()``ed
  child of an owner is such a client: it gets SIGTERM's default action back.

Installed by fusedb.runtime.hooks (which also registers :func:`after_fork_in_child`),
called by the entry points that open or attach. A handler the application
installed itself is left alone: if it raises, it can
interrupt a critical section (documented in docs/design.md).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

# The fusedb package directory (this file is fusedb/runtime/signals.py).
_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_installed = False
#: Signals being re-sent until the handler can act on them.
_pending: set[int] = set()


def call_user(fn, arg):
    """Call application code ``fn(arg)`` from inside FuseDB (``update()``'s fn,
    which runs under a shard lock): the caller's frames are written so that any
    exception out of ``fn`` releases everything, so a signal landing in ``fn``
    (or in what it calls outside FuseDB) acts there at once rather than being
    deferred until ``fn`` returns (an ``fn`` that never returns stays
    interruptible)."""
    return fn(arg)


_CALL_USER = call_user.__code__


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
    # Until the handler acts (a second signal of the same kind meanwhile needs
    # no thread of its own). pthread_kill: a signal sent to the process may be
    # taken by any thread, and only the main thread's blocking call is
    # interrupted for the handler to run.
    while signum in _pending:
        time.sleep(0.01)
        if signum in _pending:
            signal.pthread_kill(main, signum)


def _handler(signum, frame) -> None:
    if _inside_fusedb(frame):
        if signum not in _pending:
            _pending.add(signum)
            threading.Thread(target=_resender, name="fusedb-signal",
                             args=(signum, threading.main_thread().ident), daemon=True).start()
        return
    _pending.discard(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    sys.exit(128 + signum)


def raise_pending() -> None:
    """Act now on a signal the handler deferred, as it would have in application
    code: KeyboardInterrupt for SIGINT, SystemExit(128 + signum) for SIGTERM.
    Called at the points in FuseDB code where no lock is held and nothing is
    half done, and which can last (a write waiting up to ``write_timeout`` for
    buffer memory or WAL room), so a Ctrl-C or a stop is not held off for that
    long. Main thread only (handlers run there); elsewhere it does nothing."""
    if not _pending or threading.current_thread() is not threading.main_thread():
        return
    signum = signal.SIGINT if signal.SIGINT in _pending else min(_pending)
    _pending.discard(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    sys.exit(128 + signum)


def install(sigterm: bool) -> None:
    """Install the deferring handlers where the defaults are in place (main
    thread only; elsewhere signals cannot be set). ``sigterm``: also SIGTERM
    (in the processes that own a database: embedded, router)."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    if sigterm and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _handler)
    if _installed:
        return
    _installed = True
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)


def after_fork_in_child() -> None:
    """In a fork()ed child (called by fusedb.runtime.hooks): see below."""
    # A fork()ed child (a gunicorn worker, a fork pool's worker) owns no
    # database: it is an attached client, and clients keep SIGTERM's default
    # action (see above: a pool worker whose SIGTERM was deferred or swallowed
    # never exits, and Pool.terminate() waits on it for ever). Signals the
    # parent had deferred are the parent's.
    _pending.clear()
    try:
        if signal.getsignal(signal.SIGTERM) is _handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:
        pass     # forked from a thread other than the main one: nothing was inherited there
