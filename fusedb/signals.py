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
until the handler finds the thread back in application code and raises.

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
import time

_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep
_installed = False
#: The signal being re-sent until the handler can act on it (None: none).
_resend: int | None = None
#: Set once SIGTERM has been acted on: the process is exiting, and a second
#: SIGTERM must not interrupt the atexit close.
_exiting = False


def _inside_fusedb(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith(_PKG):
            return True
        frame = frame.f_back
    return False


def _resender(signum: int, main: int) -> None:
    # Until the handler acts. A single re-send was not enough: under load one
    # was seen to be lost, leaving a pool worker blocked forever on its task
    # queue after Pool.terminate() (whose parent then waited on it forever).
    while _resend == signum:
        time.sleep(0.01)
        if _resend == signum:
            signal.pthread_kill(main, signum)


def _handler(signum, frame) -> None:
    global _resend, _exiting
    if _exiting:
        return
    if _inside_fusedb(frame):
        if _resend != signum:
            _resend = signum
            threading.Thread(target=_resender, name="fusedb-signal",
                             args=(signum, threading.main_thread().ident), daemon=True).start()
        return
    _resend = None
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    _exiting = True
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
