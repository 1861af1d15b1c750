"""Child of tests/test_kernel.py: apply a list of operations to a fresh
database and write every result and the shared-memory bytes the per-operation
path writes, so the compiled kernel and the pure-Python path can be compared
byte for byte. Run as ``python kernel_child.py OPS_JSON OUT_PICKLE DATA_DIR MODE``
(MODE: embedded | multiprocess), with or without FUSEDB_NO_EXTENSIONS=1.
"""

import json
import pickle
import sys

import fusedb
from fusedb.core import kernel
from fusedb.core.layout import R_HEAD, R_LSN, RING_DATA_OFF, meta_offsets, meta_arrays


class Boom(Exception):
    """Raised by the "raise" update function (nothing may be written)."""


def _boom(_value):
    raise Boom()


#: update() functions by name: current value (bytes or None) -> new value or None.
UPDATES = {"append": lambda v: (v or b"") + b"+", "same": lambda v: v,
           "drop": lambda v: None, "raise": _boom}


class Clock:
    """A clock the operations advance ("tick"), so TTLs are deterministic."""

    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def dump(db) -> dict:
    """The bytes of the meta block's leaf table and stats, every arena, and each
    ring's head, LSN and data (what operations write; the WAL writer's header
    words and pids are left out: they move with time)."""
    store = db._store
    meta = store.meta
    offs = meta_offsets(meta.max_leaves, meta.max_key, meta.shards)
    sizes = {n: s for n, s, _f in meta_arrays(meta.max_leaves, meta.max_key, meta.shards)}
    mb = meta.region.buf
    out = {name: bytes(mb[offs[name]:offs[name] + sizes[name]])
           for name in ("stats", "shard", "active", "frozen", "nsegs", "segs", "seq", "fills",
                        "writes", "mseq")}
    for sh in store.shards:
        out[f"arena{sh.no}"] = bytes(sh.arena.region.buf)
        hdr = sh.ring.hdr
        out[f"ring{sh.no}"] = (hdr[R_HEAD], hdr[R_LSN],
                               bytes(sh.ring.region.buf[RING_DATA_OFF:]))
    return out


def main() -> None:
    ops_path, out_path, path, mode = sys.argv[1:5]
    with open(ops_path) as f:
        spec = json.load(f)
    clock = Clock()
    opts = dict(spec["options"], clock=clock)
    if mode == "multiprocess":
        opts["shards"] = 1     # one worker: segment ids are drawn in one order
    db = fusedb.open(path, **opts)
    results = []
    try:
        for op, key, arg in spec["ops"]:
            key = key.encode("latin-1")
            try:
                if op == "put":
                    r = db.put(key, arg[0].encode("latin-1"), ttl=arg[1])
                elif op == "get":
                    r = db.get(key)
                elif op == "incr":
                    r = db.incr(key, arg[0], arg[1])
                elif op == "delete":
                    r = db.delete(key)
                elif op == "update":
                    r = db.update(key, UPDATES[arg[0]], arg[1])
                elif op == "expire":
                    r = db.expire(key, arg)
                elif op == "flush":
                    r = db.flush()
                elif op == "tick":
                    clock.now += arg
                    r = None
                else:
                    raise AssertionError(op)
                results.append(repr(r))
            except (fusedb.FuseDBError, Boom) as e:
                results.append(type(e).__name__)
        state = dump(db)
        stats = db.stats()
    finally:
        db.close()
    with open(out_path, "wb") as f:
        pickle.dump({"compiled": kernel.COMPILED, "results": results, "state": state,
                     "freezes": stats["buffer_freezes"]}, f)


if __name__ == "__main__":
    main()
