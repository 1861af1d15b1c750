"""Functions that run in child processes of the multiprocess tests (importable by
name, so they work with the "spawn" start method too)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import fusedb
from fusedb import testing
from fusedb.core import failpoints

_db = None


def add(db, keys: list[bytes], times: int) -> int:
    """Increment every key ``times`` times through ``db`` (a pickled handle)."""
    for _ in range(times):
        for k in keys:
            db.incr(k)
    return times * len(keys)


def init_inherited(db) -> None:
    """Pool initializer: keep the handle this child received."""
    global _db
    _db = db


def add_inherited(keys: list[bytes], times: int) -> int:
    return add(_db, keys, times)


def client_loop(path: str, conn) -> None:
    """Serve operations sent over ``conn`` on a handle attached to ``path``, until
    None arrives. Replies ("ok", result) or ("err", exception class name)."""
    db = fusedb.connect(path)
    try:
        conn.send(("ok", "ready"))
        while True:
            msg = conn.recv()
            if msg is None:
                break
            name, args = msg
            try:
                if name == "scan":
                    result = dict(db.scan())
                elif name == "cached_segments":
                    result = testing.cached_segments(db)
                elif name == "batch_paused":
                    # Commit a batch putting keys args[0]; it pauses for good right
                    # after taking every shard lock it needs (failpoint
                    # batch.locked), having told the test it got there.
                    def pause() -> None:
                        conn.send(("ok", "paused"))
                        while True:
                            time.sleep(1)
                    failpoints.arm("batch.locked", pause)
                    with db.batch() as b:
                        for k in args[0]:
                            b.put(k, b"batch")
                    result = "not paused"
                elif name == "hold_lock":
                    # Take shard ``args[0]``'s lock (or the "meta" or "manifest"
                    # lock) and keep it until killed.
                    testing.lock_of(db, args[0]).acquire()
                    result = "held"
                elif name == "fork":
                    # A child that sleeps until killed (it inherits whatever
                    # this process holds, as fork does); its pid.
                    pid = os.fork()
                    if pid == 0:
                        time.sleep(60)
                        os._exit(0)
                    result = pid
                elif name == "thread_ends_holding":
                    # A thread takes shard ``args[0]``'s lock and ends holding it.
                    t = threading.Thread(target=testing.lock_of(db, args[0]).acquire)
                    t.start()
                    t.join()
                    result = "ended"
                else:
                    result = getattr(db, name)(*args)
                conn.send(("ok", result))
            except Exception as e:  # noqa: BLE001 - sent to the test, which asserts on it
                conn.send(("err", type(e).__name__))
    finally:
        db.close()


FORK = multiprocessing.get_context("fork")


class Client:
    """A real client process, driven over a pipe."""

    def __init__(self, path: str, ctx=FORK):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=client_loop, args=(path, child))
        self.proc.start()
        assert self.call_raw("ping") == ("ok", "ready")

    def call_raw(self, name, *args):
        if name != "ping":
            self.conn.send((name, args))
        assert self.conn.poll(30), f"client did not answer {name}{args}"
        return self.conn.recv()

    def __call__(self, name, *args):
        status, result = self.call_raw(name, *args)
        assert status == "ok", f"{name}{args} raised {result}"
        return result

    def close(self) -> None:
        if self.proc.is_alive():
            self.conn.send(None)
        self.proc.join(30)
        assert self.proc.exitcode == 0
