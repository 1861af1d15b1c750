"""The ways to reach a database, one class each, registered in ``MODES``.

Every conformance test runs once per mode through the ``access`` fixture
(conftest.py). To add a way (the daemon, an adapter, a compiled kernel): write
a subclass with ``open`` and ``close`` and add it to ``MODES``; nothing else
changes. Each mode yields a handle with the public ``FuseDB`` API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil

import fusedb
from fusedb.testing import TINY, FakeClock

#: Options of every conformance database: tiny buffers and leaves, so a test
#: writing a few hundred keys sees merges and splits.
OPTS = dict(TINY)


class Access:
    """One way to reach the data. ``open()`` returns the handle tests use (also
    ``self.db``); ``close()`` undoes everything ``open`` did, with bounded waits.

    ``clock`` is the clock TTLs are measured by on the handle's side and
    ``advance(dt)`` moves it by ``dt`` seconds (a fake clock where the mode lets
    the test inject one, else real sleeping: keep such TTLs short)."""

    fake_clock = True
    #: What the handle is (fusedb.testing.mode_role) and how many shards it has.
    role, shards = "embedded", 1
    #: Hypothesis stateful examples for this mode (processes make steps dearer).
    examples = 40
    #: Maximum wait, seconds, for a process this mode started to stop.
    stop_timeout = 60.0

    def __init__(self, path: str, opts: dict):
        self.path = path
        self.opts = opts
        # Worker processes reclaim expired entries by the real clock: start ahead of it.
        self.clock = FakeClock(time.time() + 1e6)
        self.db = None

    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    def open(self) -> fusedb.FuseDB:
        raise NotImplementedError

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def wipe(self) -> None:
        """Delete every live key (between tests sharing this database)."""
        for k, _ in list(self.db.scan()):
            self.db.delete(k)


class Embedded(Access):
    """``fusedb.open(path)``: one process, background work in threads."""

    def open(self):
        self.db = fusedb.open(self.path, clock=self.clock, **self.opts)
        return self.db


class Router(Access):
    """``fusedb.open(path, shards=2)``: the test process is the router; two worker
    processes; operations run in the router process."""

    examples = 20
    role, shards = "router", 2

    def open(self):
        self.db = fusedb.open(self.path, shards=2, clock=self.clock, **self.opts)
        return self.db


class Client(Access):
    """A separate process (server.py) opens the database with ``shards=2`` and
    stays up; the test process attaches with ``fusedb.connect(path)``. The clock
    is the real one (an attached process uses ``time.time``)."""

    fake_clock = False
    examples = 20
    role, shards = "client", 2

    def __init__(self, path: str, opts: dict):
        super().__init__(path, opts)
        self.clock = time.time
        self.proc = None

    def advance(self, dt: float) -> None:
        time.sleep(dt)

    def open(self):
        here = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(here, "server.py"), self.path,
             json.dumps(dict(self.opts, shards=2))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()      # "" if it died; bounded by its open
        if line.strip() != "ready":
            self.stop_server()
            raise RuntimeError(f"the server process did not start: {line!r}")
        self.db = fusedb.connect(self.path)
        return self.db

    def stop_server(self) -> None:
        """SIGTERM to the server's pid; it closes the database and exits."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise AssertionError(
                f"the server process did not stop in {self.stop_timeout}s") from None
        finally:
            proc.stdin.close()
            proc.stdout.close()
        assert code in (0, 128 + signal.SIGTERM), f"the server process exited {code}"

    def close(self) -> None:
        try:
            super().close()                 # detach
        finally:
            self.stop_server()


class Daemon(Client):
    """``fusedb.connect(path, start=True, shards=2)`` starts a detached ``fusedb
    serve`` (no process of the test owns the database) and attaches; closing
    detaches and stops the daemon with ``fusedb stop`` (which waits until it is
    down; its pid is then checked gone)."""

    def open(self):
        self.db = fusedb.connect(self.path, start=True, shards=2, **self.opts)
        return self.db

    def stop_server(self) -> None:
        from fusedb.tools.control import owner
        own = owner(self.path)
        if own is None:
            return
        r = subprocess.run([sys.executable, "-m", "fusedb", "stop", self.path,
                            "--timeout", str(self.stop_timeout)],
                           capture_output=True, text=True, timeout=self.stop_timeout + 30)
        assert r.returncode == 0, f"fusedb stop failed: {r.stderr}"
        assert not psutil.pid_exists(own[1]) or \
            psutil.Process(own[1]).status() == psutil.STATUS_ZOMBIE


#: Every access mode, by name (the ``access`` fixture's parameters).
MODES: dict[str, type[Access]] = {"embedded": Embedded, "router": Router, "client": Client,
                                  "daemon": Daemon}
