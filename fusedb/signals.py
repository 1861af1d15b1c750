"""SIGTERM and SIGINT handling for the process that opens a database.

Python runs a signal handler between two bytecodes of the main thread, and the
default SIGINT handler raises KeyboardInterrupt right there. If that is inside a
FuseDB critical section (a buffer half-updated under a shard lock), the lock is
released on a half-written buffer, or, for a shared-memory lock, not released at
all. So every process that opens or attaches to a database (embedded, router,
client) installs, in place of the *default* handlers only, handlers that never raise
inside FuseDB code: if the interrupted frame or any frame above it belongs to the
fusedb package, the signal is sent again 10 ms later and the exception is raised
once the thread is back in application code.

* SIGINT raises KeyboardInterrupt, as by default.
* SIGTERM raises SystemExit(128 + 15), so the interpreter exits through atexit,
  which closes the database cleanly (by default SIGTERM kills the process on the
  spot, leaving the shutdown to the next open's recovery).

A handler the application installed itself is left alone: if it raises, it can
interrupt a critical section (documented in docs/design.md).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep
_installed = False


def _inside_fusedb(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith(_PKG):
            return True
        frame = frame.f_back
    return False


def _handler(signum, frame) -> None:
    if _inside_fusedb(frame):
        t = threading.Timer(0.01, os.kill, (os.getpid(), signum))
        t.daemon = True
        t.start()
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    sys.exit(128 + signum)


def install() -> None:
    """Install the deferring handlers where the defaults are in place (main
    thread only; elsewhere signals cannot be set)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _handler)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)
