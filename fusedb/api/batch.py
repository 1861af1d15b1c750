"""Batches: several writes applied together, all or nothing, whatever shards
they span.

``with db.batch() as b: b.put(...); b.incr(...)`` validates every argument as it
is added and applies everything on a clean exit (nothing on an exception).
``commit`` takes the lock of every shard the batch touches, in ascending shard
number (the global lock order: manifest lock, shard locks ascending, meta lock;
see docs/design.md, "Batches"), and under all of them: evaluates every op in
order against an overlay of the batch's own earlier ops (a failing ``incr``
raises before anything is written), ensures room for the whole batch in every
leaf's buffer and every shard's WAL ring, and only then writes: one WAL record
per shard, then the entries. A batch that raises has applied nothing.

Isolation: the locks are held from the first read to the last write, so to
every other operation (any process) the batch happens at one instant: a reader
that has seen any of its writes sees all of them in every later read. A scan is
not a snapshot (it locks one leaf at a time), so it may see the batch in some
leaves and not others. Crash atomicity is per shard: each shard's part is one
WAL record, whole or absent, but a process killed (or power lost) while the
records of several shards are being appended can leave some shards' parts and
not others (their rings and WAL files are separate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fusedb.core import failpoints, ops
from fusedb.core.entry import INT64_MAX, INT64_MIN, key_hash
from fusedb.errors import ClosedError, IntegerOverflowError, InvalidArgumentError, ValueTypeError
from fusedb.shard.shard import NEED_SEGMENTS
from fusedb.shm.meta import S_LOGICAL
from fusedb.wal.ring import R_HEAD

if TYPE_CHECKING:
    from fusedb.api.db import FuseDB

# Outcomes of one locked attempt (Batch._apply_locked).
_DONE, _SEGMENTS, _STALL, _MOVED = "done", "segments", "stall", "moved"


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
        """Apply every op, or none: returns one result per op (also kept in
        ``results``). Raises what a failing op raises (NotAnIntegerError,
        IntegerOverflowError), InvalidArgumentError for a batch that cannot fit
        one buffer or half a WAL ring, WriteStallError, LockTimeoutError, DiskError
        as a single write would; in every case nothing of the batch was applied."""
        self._check()
        self._done = True
        db = self._db
        db._check_open()
        results: list = [None] * len(self._ops)
        deadline = None
        attempt = 0
        while True:
            # Keys never change shard while the database is open (checked again
            # under the locks), so the set of shards can be taken before locking.
            nos = sorted({db._meta.shard[db._routes.route(op[1])[1]] for op in self._ops})
            shards = [db._shards[no] for no in nos]
            held = []
            try:
                for shard in shards:       # ascending shard number: the global order
                    shard.lock.acquire()
                    held.append(shard)
                failpoints.hit("batch.locked")
                outcome, arg = self._apply_locked(shards, results)
            finally:
                for shard in reversed(held):
                    shard.lock.release()
            if outcome is _DONE:
                if db._sync:
                    for shard, end in arg:
                        shard.flusher.wait_durable(end)
                self.results = results
                return results
            if outcome is _SEGMENTS:
                attempt += 1
                db._store.open_for_retry(db._meta.segs_of(arg), attempt)
            elif outcome is _STALL:
                deadline = db._stall(arg, deadline)

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

    def _apply_locked(self, shards: list, results: list) -> tuple:
        """Under the locks of every shard the batch touches: evaluate every op,
        ensure room, then write. Returns (_DONE, [(shard, WAL end)]) once applied,
        or, with nothing applied, (_SEGMENTS, leaf) (a segment to open outside the
        locks), (_STALL, shard) (no room now) or (_MOVED, None) (retry). Raises,
        with nothing applied, what a failing op raises."""
        db = self._db
        meta = db._meta
        route = db._routes.route
        mine = {shard.no: shard for shard in shards}
        now = db._clock()
        # 1. Evaluate, in order, against an overlay: key -> [leaf, hash, entry, write].
        parts: dict[int, dict[bytes, list]] = {no: {} for no in mine}
        state: dict[bytes, list] = {}
        for i, op in enumerate(self._ops):
            key = op[1]
            st = state.get(key)
            if st is None:
                _ver, leaf = route(key)
                shard = mine.get(meta.shard[leaf])
                if shard is None:
                    return _MOVED, None
                h = key_hash(key)
                e = shard.read_locked(leaf, key, h)
                if e is NEED_SEGMENTS:
                    return _SEGMENTS, leaf
                st = state[key] = parts[shard.no][key] = [leaf, h, e, None]
            result, write = self._fn(op, now)(st[2])
            results[i] = result
            if write is not None:
                st[2] = ops.as_entry(write)
                st[3] = write
        # 2. Room in every shard: buffers, then the WAL ring (one record per shard,
        # with the seqnos the writes below take, in the same order).
        records = []
        for shard in shards:
            part = parts[shard.no]
            if not self._make_room(shard, part):
                return _STALL, shard
            muts, seqs = [], {}
            for key, (leaf, _h, _e, write) in part.items():
                if write is not None:
                    seqs[leaf] = seqs.get(leaf, meta.seq[leaf]) + 1
                    kind, value, ivalue, exp = write
                    muts.append((seqs[leaf], exp, kind, key, value, ivalue))
            rec = shard.ring.prepare_many(muts) if muts else None
            if rec is not None and not shard.ring.has_room(rec[2]):
                db._store.kick_flusher(shard.no)
                return _STALL, shard
            records.append((shard, part, rec))
        # 3. Write: nothing below can fail.
        ends = []
        for shard, part, rec in records:
            if rec is None:
                continue
            at = shard.ring.hdr[R_HEAD]
            end = shard.ring.append_prepared(rec)
            assert end > 0, "room was ensured before writing"
            logical = 0
            for key, (leaf, h, _e, write) in part.items():
                if write is not None:
                    kind, value, ivalue, exp = write
                    ok = shard.write_locked(leaf, key, h, kind, value, ivalue, exp, log=False,
                                            logged_at=at)
                    assert ok, "room was ensured before writing"
                    logical += len(key) + (len(value) if value else 8)
            meta.stats[shard.no * 8 + S_LOGICAL] += logical
            ends.append((shard, end))
        return _DONE, ends

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
