"""Leak checks (tests/conftest.py, tests/conformance/conftest.py): FuseDB
shared-memory objects, threads and processes a test left behind."""

from __future__ import annotations

import os
import threading
import time

import psutil

__all__ = ["fusedb_shm", "fusedb_threads", "fusedb_processes", "assert_no_leaks"]

SHM = "/dev/shm"


def fusedb_shm(base: str | None = None) -> set[str]:
    """FuseDB objects in /dev/shm; with ``base``, only those of databases in
    directories under ``base`` (so test runs in other directories, running at
    the same time, are not mistaken for leaks of this one)."""
    from fusedb.shm import region  # internal: the shared-memory name tag
    found = {e for e in os.listdir(SHM) if "fusedb-" in e}
    if base is None:
        return found
    tags = set()
    for root, _dirs, _files in os.walk(base):
        tags.add(region.tag_for(root))
    return {e for e in found if e.split("fusedb-", 1)[1].split("-", 1)[0] in tags}


def fusedb_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("fusedb-")]


def fusedb_processes(base: str) -> list:
    """Live FuseDB worker processes and ``fusedb serve`` daemons of databases
    under ``base`` (orphaned or detached ones included), and children of this
    process (psutil.Process objects)."""
    found = []
    me = psutil.Process()
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = p.info["cmdline"] or []
            ours = "fusedb.worker.process" in cmd or (
                "serve" in cmd and any(a == "fusedb" or a.endswith("/fusedb") for a in cmd))
            if ours and any(a.startswith(base) for a in cmd):
                found.append(p)
        except psutil.Error:
            pass
    for c in me.children(recursive=True):
        try:
            # multiprocessing's helper lives as long as this process, by design.
            if "multiprocessing.resource_tracker" in " ".join(c.cmdline()):
                continue
            if c.status() != psutil.STATUS_ZOMBIE and c not in found:
                found.append(c)
        except psutil.Error:
            pass
    return found


def assert_no_leaks(base: str, shm_before: set[str], wait: float = 10.0) -> None:
    """Fail if FuseDB processes (of databases under ``base``, or children of this
    process), shared-memory objects not in ``shm_before``, or FuseDB threads are
    left; processes get ``wait`` seconds to finish exiting and are then killed."""
    deadline = time.monotonic() + wait
    while fusedb_processes(base) and time.monotonic() < deadline:
        time.sleep(0.05)
    procs = fusedb_processes(base)
    for p in procs:
        p.kill()
    leaked = fusedb_shm(base) - shm_before
    threads = fusedb_threads()
    assert not procs, f"test left processes running: {procs}"
    assert not leaked, f"test leaked shared-memory objects: {sorted(leaked)}"
    assert not threads, f"test left FuseDB threads running: {threads}"
