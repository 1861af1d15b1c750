"""Range scans: leaf by leaf, each from a snapshot taken under the leaf's lock.

For one leaf the snapshot is a copy of its active and frozen buffers (bounded by
two slabs) plus references to its immutable segments, taken in one short
critical section. The leaf is then read without the lock in chunks: up to
``CHUNK`` entries from each segment, merged (vectorised) with the buffers; only
keys below the smallest key not yet taken from any segment are emitted, so a
chunk never emits a key that a later chunk could shadow.

Across leaves the scan resumes at the upper bound of the leaf it just read
(routing is looked up again), so a split during a scan neither repeats nor skips
a key. See docs/design.md, "Scans".
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from fusedb.api.args import coerce_key
from fusedb.api.executor import DONE, MOVED, SEGMENTS, Command, Executor
from fusedb.core.entry import KIND_INT
from fusedb.core.merge import cut, merge_runs
from fusedb.core.ops import counter_bytes
from fusedb.errors import InvalidArgumentError
from fusedb.shm.routes import RouteCache

CHUNK = 256


def _bound(x, what: str) -> bytes | None:
    return None if x is None else coerce_key(x, f"scan {what}")


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix``."""
    p = prefix.rstrip(b"\xff")
    if not p:
        return None
    return p[:-1] + bytes([p[-1] + 1])


def scan(x: Executor, check_open: Callable[[], None], closed: Callable[[], bool], start,
         stop, prefix, limit, reverse, keys_only: bool = False) -> Iterator:
    """``FuseDB.scan``: validates now, reads lazily. ``check_open`` raises
    ClosedError (or a background error): it is called before each leaf and
    each chunk of a leaf is read, and before each pair is returned if
    ``closed()`` (the handle's flag, cheap) says the handle was closed.
    ``keys_only``: yield the keys alone (bytes), not (key, value) pairs."""
    start, stop, prefix = _bound(start, "start"), _bound(stop, "stop"), _bound(prefix, "prefix")
    if prefix is not None:
        if start is not None or stop is not None:
            raise InvalidArgumentError("scan takes prefix= or start=/stop=, not both")
        start, stop = prefix, prefix_end(prefix)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgumentError(f"scan limit must be a non-negative int, got {limit!r}")
    if not isinstance(reverse, bool):
        raise InvalidArgumentError(f"scan reverse must be True or False, got {reverse!r}")
    start = start or b""
    emit = _emit_keys if keys_only else _emit
    return _scan(x, check_open, closed, start, stop, limit, reverse, emit)


def count(x: Executor, check_open: Callable[[], None]) -> int:
    """The number of live keys, by a forward scan of every leaf that counts
    each chunk's merged entries (no per-key object is made). Not a snapshot,
    as a scan is not: a key written or deleted while it runs may or may not
    count. ClosedError as ``scan``."""
    return sum(len(run) for run in _runs(x, check_open, b"", None, False))


def _scan(x: Executor, check_open, closed, start: bytes, stop: bytes | None,
          limit: int | None, reverse: bool, emit) -> Iterator:
    if limit == 0:
        return
    n = 0
    for run in _runs(x, check_open, start, stop, reverse):
        for item in emit(run, reverse):
            if closed():
                check_open()        # raises: the handle was closed meanwhile
            yield item
            n += 1
            if limit is not None and n >= limit:
                return


def _runs(x: Executor, check_open, start: bytes, stop: bytes | None, reverse: bool):
    """The live entries of start <= key < stop as merged runs (sorted ascending
    each), leaf by leaf and chunk by chunk, in scan order (descending order of
    runs with ``reverse``)."""
    if stop is not None and stop <= start:
        return
    cursor = stop if reverse else start   # reverse: exclusive upper bound (None = +inf)
    clock = x.clock
    while True:
        check_open()
        lo, hi, runs, segs = x.run(LeafSnapshot(cursor, reverse))
        buf = merge_runs(runs, 0.0, drop_dead=False)    # after the lock is released
        segs = [(s, s.to_run()) for s in segs]
        a = max(lo, start)
        b = hi if stop is None else (stop if hi is None else min(hi, stop))
        if b is None or a < b:
            yield from (_backward_runs if reverse else _forward_runs)(
                clock, check_open, a, b, buf, segs)
        if reverse:
            if lo <= start:
                return
            cursor = lo
        else:
            if hi is None or (stop is not None and hi >= stop):
                return
            cursor = hi


class LeafSnapshot(Command):
    """The executor command that snapshots one leaf for a scan: the leaf holding
    ``cursor`` (forward) or the keys just below ``cursor`` (reverse; None: the
    last leaf). Made by :func:`_scan`, one per leaf, on the thread iterating
    ``FuseDB.scan``, any process; :meth:`Executor.run` calls ``route`` with no
    lock held (the routing cache) and ``apply_locked`` under the leaf's shard
    lock, which only copies the leaf's two buffers (bounded by two slabs) and
    takes its segment list. Its result is (lo: bytes, hi: bytes or None for the
    last leaf, [copied buffer Run], [Segment]); merging the buffers and reading
    the (immutable) segments happen after the lock is released."""

    __slots__ = ("cursor", "reverse", "ver", "leaf", "lo", "hi", "shard")

    def __init__(self, cursor: bytes | None, reverse: bool):
        self.cursor = cursor
        self.reverse = reverse

    def route(self, x: Executor) -> tuple:
        st = x.routes.current()
        cursor = self.cursor
        if self.reverse:
            if cursor is None:
                pos = len(st[1]) - 1
            else:
                pos = max(0, bisect.bisect_left(st[1], cursor) - 1)
        else:
            pos = RouteCache.position(st, cursor)
        self.ver = st[0]
        self.leaf = st[2][pos]
        self.lo, self.hi = RouteCache.leaf_range(st, pos)
        self.shard = x.shards[x.meta.shard[self.leaf]]
        return (self.shard,)

    def apply_locked(self, x: Executor) -> tuple:
        if not x.routes.valid(self.ver):
            return MOVED, None
        meta, leaf, shard = x.meta, self.leaf, self.shard
        segs = shard.segments_locked(leaf)
        if segs is None:
            return SEGMENTS, meta.segs_of(leaf)
        runs = [shard.slabs[sid].to_run(copy=True)
                for sid in (meta.active[leaf], meta.frozen[leaf]) if sid >= 0]
        self.result = (self.lo, self.hi, runs, segs)
        return DONE, ()


def _emit(run, backward: bool) -> Iterator[tuple[bytes, bytes]]:
    idx = range(len(run) - 1, -1, -1) if backward else range(len(run))
    for i in idx:
        v = run.value(i)
        if run.kind[i] == KIND_INT:
            v = counter_bytes(int.from_bytes(v[:8], "little", signed=True))
        yield run.key(i), v


def _emit_keys(run, backward: bool) -> Iterator[bytes]:
    idx = range(len(run) - 1, -1, -1) if backward else range(len(run))
    return map(run.key, idx)


def leaf_forward(clock, check_open, a: bytes, b: bytes | None, buf, segs):
    """The live (key, value) pairs of one leaf's snapshot (``buf``: its merged
    buffers, ``segs``: (Segment, Run) pairs) with a <= key < b, ascending."""
    for run in _forward_runs(clock, check_open, a, b, buf, segs):
        yield from _emit(run, False)


def _forward_runs(clock, check_open, a: bytes, b: bytes | None, buf, segs):
    cur = a
    while True:
        check_open()        # the segments are unmapped once the handle is closed
        bound = b
        parts = []
        for seg, run in segs:
            i = seg.lower_bound(cur)
            e = seg.count if b is None else seg.lower_bound(b)
            j = min(i + CHUNK, e)
            if j < e:
                k = seg.key(j)
                if bound is None or k < bound:
                    bound = k
            parts.append(run.take(slice(i, j)))
        now = clock()
        merged = merge_runs([cut(buf, cur, bound)] + [cut(p, cur, bound) for p in parts],
                            now, drop_dead=True)
        yield merged
        if bound == b:
            return
        cur = bound


def _backward_runs(clock, check_open, a: bytes, b: bytes | None, buf, segs):
    cur = b
    while True:
        check_open()        # the segments are unmapped once the handle is closed
        bound = a
        parts = []
        for seg, run in segs:
            i0 = seg.lower_bound(a)
            e = seg.count if cur is None else seg.lower_bound(cur)
            i = max(i0, e - CHUNK)
            if i > i0:
                bound = max(bound, seg.key(i))
            parts.append(run.take(slice(i, e)))
        now = clock()
        merged = merge_runs([cut(buf, bound, cur)] + [cut(p, bound, cur) for p in parts],
                            now, drop_dead=True)
        yield merged
        if bound == a:
            return
        cur = bound
