"""Functions that run in child processes of the multiprocess tests (importable by
name, so they work with the "spawn" start method too)."""

from __future__ import annotations

import fusedb

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
                    result = len(db._store.segcache)
                elif name == "hold_lock":
                    # Take shard ``args[0]``'s lock and keep it until killed.
                    db._shards[args[0]].lock.acquire()
                    result = "held"
                else:
                    result = getattr(db, name)(*args)
                conn.send(("ok", result))
            except Exception as e:  # noqa: BLE001 - sent to the test, which asserts on it
                conn.send(("err", type(e).__name__))
    finally:
        db.close()
