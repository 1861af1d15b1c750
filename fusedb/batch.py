"""Batches: several writes applied together, atomically per shard.

``with db.batch() as b: b.put(...); b.incr(...)`` validates every argument as it
is added and applies everything on a clean exit (nothing on an exception). For
each shard touched, under that shard's lock: every op is evaluated against an
overlay of the batch's own earlier ops (an ``incr`` that would fail aborts the
batch before anything is written), room for the whole part is ensured in the
leaves' buffers, and only then are the entries written. Readers of that shard
therefore see all of its part or none. Keys never change shard, so grouping by
shard before locking is stable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ops
from .entry import INT64_MAX, INT64_MIN, key_hash
from .errors import ClosedError, IntegerOverflowError, InvalidArgumentError, ValueTypeError
from .shard.shard import NEED_SEGMENTS
from .shm.meta import S_LOGICAL
from .wal.ring import R_HEAD

if TYPE_CHECKING:
    from .db import FuseDB


class Batch:
    """Not thread-safe: one thread builds and commits a batch."""

    def __init__(self, db: "FuseDB"):
        self._db = db
        self._ops: list[tuple] = []
        self._done = False
        #: After commit: one result per op, in order (None for put, the new value for
        #: incr, a bool for delete and expire).
        self.results: list | None = None

    def _check(self) -> None:
        if self._done:
            raise ClosedError("this batch was already committed or discarded")

    def put(self, key, value, ttl: float | None = None) -> None:
        self._check()
        db = self._db
        db._deadline(ttl)  # validate now; the deadline is taken at commit
        self._ops.append(("put", db._key(key), db._value(value), ttl))

    def incr(self, key, delta: int = 1) -> None:
        self._check()
        if type(delta) is not int:
            raise ValueTypeError(f"incr delta must be an int, not {type(delta).__name__}")
        if delta < INT64_MIN or delta > INT64_MAX:
            raise IntegerOverflowError(f"incr delta {delta} does not fit in 64 bits")
        self._ops.append(("incr", self._db._key(key), delta, None))

    def delete(self, key) -> None:
        self._check()
        self._ops.append(("delete", self._db._key(key), None, None))

    def expire(self, key, ttl: float | None) -> None:
        self._check()
        self._db._deadline(ttl)
        self._ops.append(("expire", self._db._key(key), None, ttl))

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self._done = True

    def commit(self) -> list:
        self._check()
        self._done = True
        db = self._db
        db._check_open()
        by_shard: dict[int, list[int]] = {}
        for i, op in enumerate(self._ops):
            _ver, leaf = db._routes.route(op[1])
            by_shard.setdefault(db._meta.shard[leaf], []).append(i)
        results: list = [None] * len(self._ops)
        for shard_no in sorted(by_shard):
            self._apply(db._shards[shard_no], by_shard[shard_no], results)
        self.results = results
        return results

    def _fn(self, op: tuple, now: float):
        kind, key, arg, ttl = op
        exp = self._db._deadline(ttl) if ttl is not None else 0.0
        if kind == "put":
            return ops.op_put(arg, exp)
        if kind == "incr":
            return ops.op_incr(key, arg, now)
        if kind == "delete":
            return ops.op_delete(now)
        return ops.op_expire(exp, now)

    def _apply(self, shard, indexes: list[int], results: list) -> None:
        db = self._db
        meta = db._meta
        deadline = None
        attempt = 0
        while True:
            missing = None
            shard.lock.acquire()
            try:
                now = db._clock()
                state: dict[bytes, list] = {}   # key -> [leaf, hash, entry, write]
                for i in indexes:
                    key = self._ops[i][1]
                    st = state.get(key)
                    if st is None:
                        _ver, leaf = db._routes.route(key)
                        h = key_hash(key)
                        e = shard.read_locked(leaf, key, h)
                        if e is NEED_SEGMENTS:
                            missing = leaf
                            break
                        st = state[key] = [leaf, h, e, None]
                    result, write = self._fn(self._ops[i], now)(st[2])
                    results[i] = result
                    if write is not None:
                        st[2] = ops.as_entry(write)
                        st[3] = write
                end = 0
                if missing is None and self._make_room(shard, state):
                    # One WAL record for the shard's whole part (atomic on replay),
                    # with the seqnos the writes below will take, in the same order.
                    muts, seqs = [], {}
                    for key, (leaf, h, _e, write) in state.items():
                        if write is not None:
                            seqs[leaf] = seqs.get(leaf, meta.seq[leaf]) + 1
                            kind, value, ivalue, exp = write
                            muts.append((seqs[leaf], exp, kind, key, value, ivalue))
                    at = shard.ring.hdr[R_HEAD]
                    end = shard.ring.append_many(muts) if muts else 1
                    if end > 0:
                        logical = 0
                        for key, (leaf, h, _e, write) in state.items():
                            if write is not None:
                                kind, value, ivalue, exp = write
                                ok = shard.write_locked(leaf, key, h, kind, value, ivalue,
                                                        exp, log=False, logged_at=at)
                                assert ok, "room was ensured before writing"
                                logical += len(key) + (len(value) if value else 8)
                        meta.stats[shard.no * 8 + S_LOGICAL] += logical
                    else:
                        db._store.kick_flusher(shard.no)
            finally:
                shard.lock.release()
            if end > 0:
                if db._sync and muts:
                    shard.flusher.wait_durable(end)
                return
            if missing is not None:
                attempt += 1
                db._store.open_for_retry(meta.segs_of(missing), attempt)
            else:
                deadline = db._stall(shard, deadline)

    @staticmethod
    def _make_room(shard, state: dict) -> bool:
        """Ensure every leaf's active buffer can take this batch's writes (under the
        lock). False: no room now, wait and retry."""
        need: dict[int, list[int]] = {}
        for key, (leaf, _h, _e, write) in state.items():
            if write is not None:
                n = need.setdefault(leaf, [0, 0])
                n[0] += 1
                n[1] += len(key) + max(8, len(write[1]) if write[1] is not None else 8)
        meta, arena = shard.meta, shard.arena
        for leaf, (nkeys, nbytes) in need.items():
            sid = meta.active[leaf]
            if sid >= 0 and shard.slabs[sid].room(nkeys, nbytes):
                continue
            if sid >= 0:
                if meta.frozen[leaf] >= 0:
                    return False
                shard.freeze_locked(leaf)
            sid = arena.alloc(leaf)
            if sid < 0:
                return False
            meta.active[leaf] = sid
            if not shard.slabs[sid].room(nkeys, nbytes):
                raise InvalidArgumentError(
                    f"the batch writes {nkeys} keys ({nbytes} bytes) to one leaf: more than "
                    f"one buffer holds; split it into smaller batches")
        return True
