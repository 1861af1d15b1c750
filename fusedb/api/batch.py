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

from fusedb.api import args
from fusedb.api.executor import DONE, MOVED, SEGMENTS, STALL, Command
from fusedb.core import failpoints, ops
from fusedb.core.entry import key_hash
from fusedb.errors import ClosedError, InvalidArgumentError
from fusedb.shard.shard import NO_ROOM
from fusedb.shm.meta import S_LOGICAL
from fusedb.wal.ring import R_HEAD


class Ops:
    """The write methods a batch and a transaction share (fusedb.api.transaction):
    each validates its arguments as the database's method of the same name does
    and hands the op, ``(kind, key, arg, ttl)``, to ``_add``, returning what
    ``_add`` returns (a batch: None, its results come at commit; a transaction:
    the result at once). Subclasses set ``_x``, ``_args`` and ``_done``."""

    _what = "batch"

    def _check(self):
        if self._done:
            raise ClosedError(f"this {self._what} was already committed or discarded")

    def _add(self, op: tuple):
        raise NotImplementedError

    # Each method validates in the order the database's method does (key, value or
    # delta, options, ttl), so both raise the same error for the same arguments.
    # The deadline of a ttl is taken at commit.

    def put(self, key, value, ttl: float | None = None, nx: bool = False,
            xx: bool = False, keepttl: bool = False, get: bool = False):
        """``FuseDB.put``, with its options, as part of the batch."""
        self._check()
        key, value = self._args.key(key), self._args.value(value)
        if nx or xx or keepttl or get:
            args.put_options(ttl, nx, xx, keepttl, get)
            return self._add(("set", key, (value, nx, xx, keepttl, get), _ttl(ttl)))
        return self._add(("put", key, value, _ttl(ttl)))

    def add(self, key, value, ttl: float | None = None):
        """``FuseDB.add`` as part of the batch."""
        return self.put(key, value, ttl, nx=True)

    def incr(self, key, delta: int = 1, ttl: float | None = None, xx: bool = False):
        """``FuseDB.incr``, with its ttl and xx, as part of the batch."""
        self._check()
        key, delta = self._args.key(key), args.delta(delta)
        if xx:
            args.incr_options(ttl, xx)
        return self._add(("incr", key, (delta, xx), _ttl(ttl)))

    def decr(self, key, delta: int = 1, ttl: float | None = None, xx: bool = False):
        """``FuseDB.decr`` as part of the batch."""
        if type(delta) is not int:
            args.delta(delta, "decr")       # raises ValueTypeError
        return self.incr(key, -delta, ttl, xx)

    def getdel(self, key):
        """``FuseDB.getdel`` as part of the batch."""
        self._check()
        return self._add(("getdel", self._args.key(key), None, None))

    def getex(self, key, ttl: float | None):
        """``FuseDB.getex`` as part of the batch."""
        self._check()
        return self._add(("getex", self._args.key(key), None, _ttl(ttl)))

    def touch(self, key, ttl: float | None):
        """``FuseDB.touch`` (= ``expire``) as part of the batch."""
        return self.expire(key, ttl)

    def delete(self, key):
        self._check()
        return self._add(("delete", self._args.key(key), None, None))

    def expire(self, key, ttl: float | None):
        self._check()
        return self._add(("expire", self._args.key(key), None, _ttl(ttl)))

    def update(self, key, fn, ttl: float | None = None):
        """``FuseDB.update`` as part of the batch: ``fn`` runs at commit, under the
        locks, seeing the batch's earlier ops; if it raises, nothing of the batch
        is applied. Its result is what was stored (bytes or None)."""
        self._check()
        key = self._args.key(key)
        return self._add(("update", key, self._callback(fn), _ttl(ttl)))

    def _callback(self, fn):
        """``fn`` checked and guarded as ``update()``'s (Executor.user_fn)."""
        return self._x.user_fn(args.callback(fn))


class Batch(Ops):
    """Built and committed by one thread (not thread-safe). ``commit`` runs the
    batch as one command of the executor (:class:`Commit`), under the locks of
    every shard it touches."""

    def __init__(self, x, validators, check_open):
        self._x = x
        self._args = validators
        self._check_open = check_open
        self._ops: list[tuple] = []
        self._done = False
        #: After commit: one result per op, in order: what the same call on the
        #: database returns (None for a plain put, the new value for incr, a bool
        #: for delete, expire, touch and add, what was stored for update, ...).
        self.results: list | None = None

    def _add(self, op: tuple) -> None:
        self._ops.append(op)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self._done = True

    def commit(self) -> list:
        """Apply every op, or none: returns one result per op (also kept in
        ``results``). Raises what a failing op raises (NotAnIntegerError,
        IntegerOverflowError, what an update's function raises),
        InvalidArgumentError for a batch that cannot fit one buffer or half a WAL
        ring, WriteStallError, LockTimeoutError, DiskError as a single write
        would; in every case nothing of the batch was applied."""
        self._check()
        self._done = True
        self._check_open()
        self.results = self._x.run(Commit(self._ops, self._args))
        return self.results


def read_key_locked(x, mine: dict, key: bytes) -> tuple:
    """Under the locks of the shards ``mine`` (number -> shard): ``key``'s state
    for an overlay, ``([leaf, hash, entry, None], None)``, or ``(None, outcome)``
    when it cannot be read now: (MOVED, None) (its leaf is in a shard not
    locked) or (SEGMENTS, ids) (segments to open first)."""
    _ver, leaf = x.routes.route(key)
    shard = mine.get(x.meta.shard[leaf])
    if shard is None:
        return None, (MOVED, None)
    h = key_hash(key)
    e, missing = shard.read_locked(leaf, key, h)
    if missing is not None:
        return None, (SEGMENTS, missing)
    return [leaf, h, e, None], None


def _ttl(ttl):
    """``ttl`` validated (None stays None)."""
    if ttl is not None:
        args.ttl_seconds(ttl)
    return ttl


class Commit(Command):
    """The executor command of ``Batch.commit`` (fusedb.api.executor.Command):
    run by the committing thread, ``apply_locked`` under the locks of every
    shard the batch touches. ``ops``: the batch's validated ops, in order."""

    __slots__ = ("_ops", "_args", "_shards")

    def __init__(self, ops_: list[tuple], validators):
        self._ops = ops_
        self._args = validators

    def route(self, x) -> list:
        # A key changes shard only when its leaf moves (fusedb.shard.moving),
        # which holds the locks of both shards: under the locks taken here a
        # key's shard is settled, and read_key_locked finds one routed to a
        # shard not locked (it moved in between) and the commit starts over.
        meta, route = x.meta, x.routes.route
        self._shards = [x.shards[no] for no in sorted({meta.shard[route(op[1])[1]]
                                                       for op in self._ops})]
        return self._shards

    def _fn(self, op: tuple, now: float):
        kind, key, arg, ttl = op
        exp = self._args.deadline(ttl) if ttl is not None else 0.0
        if kind == "put":
            return ops.op_put(arg, exp)
        if kind == "set":
            return ops.op_set(arg[0], exp, now, *arg[1:])
        if kind == "incr":
            return ops.op_incr(key, arg[0], now, exp, arg[1])
        if kind == "getdel":
            return ops.op_getdel(now)
        if kind == "getex":
            return ops.op_getex(exp, now)
        if kind == "delete":
            return ops.op_delete(now)
        if kind == "update":
            return ops.op_update(arg, self._args.value, exp if ttl is not None else None,
                                 self._args.clock)
        return ops.op_expire(exp, now)

    def apply_locked(self, x) -> tuple:
        """Under the locks of every shard the batch touches: evaluate every op,
        ensure room, then write. Returns (DONE, [(shard, WAL end)]) once applied
        (``result``: one result per op), or, with nothing applied, (SEGMENTS,
        segment ids to open outside the locks), (STALL, shard) (no room now) or
        (MOVED, None) (retry). Raises, with nothing applied, what a failing op
        raises."""
        failpoints.hit("batch.locked")
        meta = x.meta
        mine = {shard.no: shard for shard in self._shards}
        now = x.clock()
        results: list = [None] * len(self._ops)
        # 1. Evaluate, in order, against an overlay: key -> [leaf, hash, entry, write].
        parts: dict[int, dict[bytes, list]] = {no: {} for no in mine}
        state: dict[bytes, list] = {}
        for i, op in enumerate(self._ops):
            key = op[1]
            st = state.get(key)
            if st is None:
                st, retry = read_key_locked(x, mine, key)
                if st is None:
                    return retry
                state[key] = parts[meta.shard[st[0]]][key] = st
            result, write = self._fn(op, now)(st[2])
            results[i] = result
            if write is not None:
                st[2] = ops.as_entry(write)
                st[3] = write
        self.result = results
        return self.write_locked(x, parts)

    def write_locked(self, x, parts: dict[int, dict[bytes, list]]) -> tuple:
        """Steps 2 and 3 of ``apply_locked``, under the locks of ``self._shards``:
        ``parts`` is shard number -> {key: [leaf, hash, entry, write or None]}.
        Ensures room for every write, then writes (one WAL record per shard).
        Returns (DONE, [(shard, WAL end)]), or (STALL, shard) with nothing written."""
        meta = x.meta
        shards = self._shards
        # 2. Room in every shard: buffers, then the WAL ring (one record per shard,
        # with the seqnos the writes below take, in the same order).
        records = []
        for shard in shards:
            part = parts[shard.no]
            if not self._make_room(shard, part):
                return STALL, shard
            muts, seqs = [], {}
            for key, (leaf, _h, _e, write) in part.items():
                if write is not None:
                    seqs[leaf] = seqs.get(leaf, meta.seq[leaf]) + 1
                    kind, value, ivalue, exp = write
                    muts.append((seqs[leaf], exp, kind, key, value, ivalue))
            rec = shard.ring.prepare_many(muts) if muts else None
            if rec is not None and not shard.ring.has_room(rec[2]):
                x.store.kick_wal_writer(shard.no)
                return STALL, shard
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
                    pos = shard.write_locked(leaf, key, h, kind, value, ivalue, exp, logged_at=at)
                    assert pos != NO_ROOM, "room was ensured before writing"
                    logical += ops.logical_bytes(key, kind, value)
            shard.stats[S_LOGICAL] += logical
            ends.append((shard, end))
        return DONE, ends

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
