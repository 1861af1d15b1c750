"""The router's worker processes: start (with CPU pinning), wait until ready,
supervise (restart a dead one; recover the meta and manifest locks of dead
holders). :class:`Supervisor` is the restart loop, shared with the Redis
server processes of ``fusedb serve`` (fusedb.tools.servers)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import psutil

from fusedb.errors import FuseDBError, InvalidArgumentError
from fusedb.shm.meta import W_PID

#: The directory holding the fusedb package (put on the workers' PYTHONPATH).
_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

log = logging.getLogger("fusedb.serve")


def child_env() -> dict:
    """This process's environment with the fusedb package's directory first on
    PYTHONPATH: a FuseDB process it starts (a shard worker, a daemon) runs the
    same FuseDB as this one, installed or from a checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = _PKG_ROOT + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    return env


class Supervisor:
    """Restart dead processes: a daemon thread polls ``procs`` (a list of
    subprocess.Popen or None, replaced in place) every ``period`` seconds and
    replaces an exited one with ``spawn(no)``, at most once per ``backoff``
    seconds per slot (a process that keeps dying, e.g. a disk error at its
    start, is not restarted in a tight loop). ``before_round()`` runs first in
    every round. ``what(no)`` names slot ``no`` in the log lines (logger
    "fusedb.serve", WARNING)."""

    def __init__(self, procs: list, spawn, what, before_round=None,
                 period: float = 0.05, backoff: float = 0.5):
        self.procs = procs
        self.spawn = spawn
        self.what = what
        self.before_round = before_round
        self.period = period
        self.backoff = backoff
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fusedb-supervisor",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising (no restart after this returns)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        restarts = [0.0] * len(self.procs)
        while not self._closing.wait(self.period):
            if self.before_round is not None:
                self.before_round()
            for no, p in enumerate(self.procs):
                if p is None or p.poll() is None or self._closing.is_set():
                    continue
                if time.monotonic() < restarts[no]:
                    continue
                log.warning("%s (pid %d) exited with code %s; restarting it", self.what(no),
                            p.pid, p.returncode)
                try:
                    self.procs[no] = self.spawn(no)
                except OSError as e:
                    log.error("could not restart the %s: %s", self.what(no), e)
                restarts[no] = time.monotonic() + self.backoff


class WorkerProcesses:
    """The router's worker processes, one per shard. Built and started by the
    router role's constructor (fusedb.router.router.RouterStore, opening
    thread); supervised by its own daemon thread until :meth:`stop_supervising`;
    waited for and killed by the router's close (the closing thread). No lock:
    ``procs[no]`` is replaced only by the supervisor, which the close stops
    first.

    ``rt``: the router's Runtime (path, opts, meta, meta_lock, manifest_lock);
    ``lock_fd``: the locked LOCK descriptor every worker inherits (the
    directory stays locked while any worker of this run lives)."""

    def __init__(self, rt, lock_fd: int):
        self.rt = rt
        self.lock_fd = lock_fd
        self.procs: list[subprocess.Popen | None] = []
        self._supervisor: Supervisor | None = None

    def start(self) -> None:
        """Start one worker per shard and wait until each is ready; then start
        supervising. Raises InvalidArgumentError if ``pin`` names a CPU this
        process may not use, FuseDBError if a worker exits or does not get
        ready within 60 s, OSError if one cannot be started."""
        pin = self.rt.opts.pin
        if pin and not isinstance(pin, bool):
            allowed = sorted(psutil.Process().cpu_affinity())
            bad = sorted(set(pin) - set(allowed))
            if bad:
                raise InvalidArgumentError(f"pin: CPU(s) {bad} are not available to this "
                                           f"process; it may use {allowed}")
        self.procs = [self._spawn(i) for i in range(self.rt.opts.shards)]
        for i, p in enumerate(self.procs):
            self._wait_ready(i, p)
        self._supervisor = Supervisor(self.procs, self._spawn,
                                      lambda no: f"worker of shard {no}",
                                      self._recover_locks)
        self._supervisor.start()

    def stop_supervising(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None

    def kill_all(self) -> None:
        """Kill (and reap) every worker still running."""
        self.stop_supervising()
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        self.procs = []

    def _spawn(self, no: int) -> subprocess.Popen:
        self.rt.meta.worker_slots(no)[W_PID] = 0
        # The worker inherits the locked LOCK descriptor (and nothing else): the
        # directory stays locked while any worker of this run lives.
        # Its stdout is not the application's: a worker outliving a killed router
        # must not hold the application's output pipe open.
        p = subprocess.Popen([sys.executable, "-m", "fusedb.worker.process", self.rt.path,
                              str(no)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=child_env(),
                             close_fds=True, pass_fds=(self.lock_fd,))
        pin = self.rt.opts.pin
        if pin:
            cpus = list(pin) if not isinstance(pin, bool) else \
                sorted(psutil.Process().cpu_affinity())
            psutil.Process(p.pid).cpu_affinity([cpus[no % len(cpus)]])
        return p

    def _wait_ready(self, no: int, p: subprocess.Popen, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.rt.meta.worker_slots(no)[W_PID] != p.pid:
            if p.poll() is not None:
                raise FuseDBError(f"the worker process of shard {no} exited with code "
                                  f"{p.returncode} while starting (its stderr says why)")
            if time.monotonic() > deadline:
                p.kill()
                raise FuseDBError(f"the worker process of shard {no} did not start "
                                  f"within {timeout}s")
            time.sleep(0.005)

    def _recover_locks(self) -> None:
        """Recover the meta and manifest locks of dead holders (any next locker
        would, but readers of the routing table spin on an odd seqlock without
        locking: Meta.end_interrupted_change)."""
        for lock in (self.rt.meta_lock, self.rt.manifest_lock):
            lock.recover_if_dead()
