"""Transactions: ``db.transact(fn, keys)``, an interactive batch.

``fn(tx)`` runs under the locks of every shard ``keys`` live in (ascending
shard number, the global lock order), and may read and write through ``tx``
(:class:`Transaction`): each call returns its result at once and later calls
see earlier ones (an overlay). When fn returns, the writes are applied as a
batch's are (fusedb.api.batch): room is ensured in every shard first, then
one WAL record per shard, then the entries. If fn raises, nothing is written.

fn may run more than once (a key outside the locked shards, a segment to
open, no room in a buffer: the attempt is dropped and fn runs again, with all
shards locked in the first case), so it must have no effect outside ``tx``,
the rule ``update()``'s fn has. It must not call the database (it holds shard
locks): that raises InvalidArgumentError.
"""

from __future__ import annotations

from fusedb.api.batch import Commit, Ops, read_key_locked
from fusedb.api.executor import MOVED, SEGMENTS
from fusedb.api.scan import leaf_forward
from fusedb.core import ops
from fusedb.core.entry import KIND_DEL, KIND_VALUE
from fusedb.core.merge import merge_runs
from fusedb.errors import InvalidArgumentError
from fusedb.shm.routes import RouteCache

#: Retry outcome of its own: a key outside the locked shards; rerun with all locked.
_ESCALATE = -1


class Retry(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a :class:`Transaction` method when this attempt of ``fn`` must
    be dropped (nothing is written) and ``fn`` run again: a key in a shard not
    locked, a segment to open, the routing moved. A BaseException so that
    ``except Exception`` in fn lets it through; code that catches it anyway (a
    script interpreter's bridge) must raise it again once fn's own code is
    left. ``outcome``, ``arg``: what the executor does before the next attempt."""

    def __init__(self, outcome: int, arg=None):
        super().__init__(outcome, arg)
        self.outcome, self.arg = outcome, arg


class Transaction(Ops):
    """What ``fn`` of ``FuseDB.transact`` gets: the database's point operations,
    applied at once to an overlay of this transaction's writes and the locked
    shards' data, and written when fn returns. Methods with the database's
    names take the same arguments, raise the same errors and return the same
    results (put, add, incr, decr, getdel, getex, touch, delete, expire,
    update, get, get_many, ttl, ``in``); :meth:`entry`, :meth:`put_at`,
    :meth:`expire_at` and :meth:`keys` have no database counterpart. ``now``
    (unix seconds) is the time every expiry of this attempt is checked
    against. Valid only while fn runs (ClosedError after)."""

    _what = "transaction"

    def __init__(self, cmd: Transact, x, mine: dict):
        self._cmd = cmd
        self._x = x
        self._args = cmd._args
        self._mine = mine
        self._done = False
        self.now = x.clock()
        self._clock = lambda: self.now
        #: key -> [leaf, hash, entry, write or None]; shard number -> the same, its keys.
        self._state: dict[bytes, list] = {}
        self.parts: dict[int, dict[bytes, list]] = {no: {} for no in mine}

    def _load(self, key: bytes) -> list:
        st = self._state.get(key)
        if st is None:
            st, retry = read_key_locked(self._x, self._mine, key)
            if st is None:
                raise Retry(_ESCALATE if retry[0] == MOVED else retry[0], retry[1])
            self._state[key] = self.parts[self._x.meta.shard[st[0]]][key] = st
        return st

    def _apply(self, key: bytes, fn):
        st = self._load(key)
        result, write = fn(st[2])
        if write is not None:
            st[2] = ops.as_entry(write)
            st[3] = write
        return result

    def _add(self, op: tuple):
        return self._apply(op[1], self._cmd._fn(op, self.now))

    def _callback(self, fn):
        # fn of transact is already guarded (Executor.user_fn); guarding update()'s
        # fn again would end the guard when it returns.
        from fusedb.api import args
        return args.callback(fn)

    # -- reads -------------------------------------------------------------------------

    def get(self, key) -> bytes | None:
        """``FuseDB.get``: the live value (a counter as its decimal) or None."""
        self._check()
        return ops.value_of(self._load(self._args.key(key))[2], self._clock)

    def get_many(self, keys) -> list[bytes | None]:
        return [self.get(k) for k in keys]

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def entry(self, key) -> tuple[bytes, float] | None:
        """``(value, exp)`` of a live key (value as ``get`` returns it; exp its
        absolute expiry in unix seconds, 0.0: none), or None."""
        self._check()
        e = self._load(self._args.key(key))[2]
        if not ops.alive(e, self.now):
            return None
        return ops.value_of(e, self._clock), e[2]

    def ttl(self, key) -> float:
        """``FuseDB.ttl``: seconds left, -1.0 (no expiry) or -2.0 (missing)."""
        got = self.entry(key)
        if got is None:
            return -2.0
        return -1.0 if got[1] == 0.0 else got[1] - self.now

    def keys(self, prefix=None) -> list[bytes]:
        """Every live key (starting with ``prefix``, bytes or str), sorted. Needs
        every shard locked: in a transaction over fewer, fn is run again with
        all locked (Retry). O(keys of the database) under every lock."""
        self._check()
        x = self._x
        if len(self._mine) < len(x.shards):
            raise Retry(_ESCALATE)
        start = b"" if prefix is None else self._args.key(prefix)
        found = set()
        st = x.routes.current()
        for pos, leaf in enumerate(st[2]):
            lo, hi = RouteCache.leaf_range(st, pos)
            if hi is not None and hi <= start:
                continue
            if prefix is not None and not (lo < start or lo.startswith(start)):
                break
            shard = self._mine[x.meta.shard[leaf]]
            segs = shard.segments_locked(leaf)
            if segs is None:
                raise Retry(SEGMENTS, x.meta.segs_of(leaf))
            runs = [shard.slabs[sid].to_run(copy=True)
                    for sid in (x.meta.active[leaf], x.meta.frozen[leaf]) if sid >= 0]
            buf = merge_runs(runs, 0.0, drop_dead=False)
            for key, _v in leaf_forward(self._clock, lambda: None, max(lo, start), hi, buf,
                                      [(s, s.to_run()) for s in segs]):
                if prefix is not None and not key.startswith(start):
                    break
                found.add(key)
        for key, st_ in self._state.items():
            if ops.alive(st_[2], self.now):
                found.add(key)
            else:
                found.discard(key)
        return sorted(k for k in found if prefix is None or k.startswith(start))

    # -- writes with an absolute expiry --------------------------------------------------

    def put_at(self, key, value, exp: float) -> None:
        """Store ``value`` under ``key`` expiring at ``exp`` (unix seconds; 0.0:
        never). An ``exp`` not after ``now`` deletes the key instead (Redis SET
        ... EXAT with a past time)."""
        self._check()
        key, value = self._args.key(key), self._args.value(value)
        exp = _absolute(exp)
        gone = exp != 0.0 and exp <= self.now
        self._apply(key, lambda e: (None, (KIND_DEL, None, 0, 0.0) if gone
                                    else (KIND_VALUE, value, 0, exp)))

    def expire_at(self, key, exp: float) -> bool:
        """A live ``key`` now expires at ``exp`` (unix seconds; 0.0: never; not
        after ``now``: deleted). True if the key was live (nothing written
        otherwise)."""
        self._check()
        key = self._args.key(key)
        exp = _absolute(exp)
        now = self.now
        if exp != 0.0 and exp <= now:
            return self._apply(key, ops.op_delete(now))
        return self._apply(key, ops.op_expire(exp, now))


def _absolute(exp) -> float:
    if type(exp) not in (int, float) or exp != exp or exp < 0 or exp == float("inf"):
        raise InvalidArgumentError(f"an absolute expiry is a finite number >= 0, got {exp!r}")
    return float(exp)


class Transact(Commit):
    """The executor command of ``FuseDB.transact``: ``fn(tx)`` under the locks of
    the shards of ``keys`` (all shards if None, or once fn touched a key
    outside them), then the overlay's writes as :class:`Commit` writes them."""

    __slots__ = ("_user", "_keys", "_all")

    def __init__(self, fn, keys: list | None, validators):
        super().__init__([], validators)
        self._user = fn
        self._keys = keys
        self._all = keys is None

    def route(self, x) -> list:
        if self._all:
            self._shards = list(x.shards)
            return self._shards
        self._ops = [(None, k) for k in self._keys]
        return super().route(x)

    def apply_locked(self, x) -> tuple:
        tx = Transaction(self, x, {shard.no: shard for shard in self._shards})
        try:
            result = self._user(tx)
        except Retry as r:
            if r.outcome == _ESCALATE:
                self._all = True
                return MOVED, None
            return r.outcome, r.arg
        finally:
            tx._done = True
        outcome = self.write_locked(x, tx.parts)
        self.result = result
        return outcome
