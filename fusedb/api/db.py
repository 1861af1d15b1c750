"""The public API: :func:`open` and :class:`FuseDB`.

Every point operation runs the same short path (docs/design.md, "Point
operations"): validate, hash the key, route it to a leaf with the cached routing
table, take the leaf's shard lock, check the routing version is unchanged, read
or write the leaf's buffers, release. Segment lookups for ``get`` happen after
the lock is released, on segment objects taken under it.
"""

from __future__ import annotations

import math
import time
from typing import Iterable, Iterator

import psutil

from fusedb.core import ops, retry
from fusedb.runtime import signals
from fusedb.api import scan as _scan
from fusedb.api.batch import Batch
from fusedb.core.entry import INT64_MAX, INT64_MIN, KIND_DEL, KIND_INT, KIND_VALUE, key_hash
from fusedb.errors import ClosedError, DiskError, ForkedError, FuseDBKeyError, IntegerOverflowError, \
    InvalidArgumentError, KeyTooLargeError, KeyTypeError, ValueTooLargeError, ValueTypeError, \
    WriteStallError
from fusedb.options import Options
from fusedb.shm.routes import RouteCache
from fusedb.shard.shard import NEED_SEGMENTS, segment_entry
from fusedb.shm.meta import S_LOGICAL, S_STALLS, STAT_FIELDS, W_REPAIRS
from fusedb.router.router import RouterStore
from fusedb.runtime import hooks
from fusedb.runtime.client import ClientStore
from fusedb.runtime.embedded import EmbeddedStore
from fusedb.runtime.state import Role
from fusedb.wal.ring import R_WAL_BYTES

#: ``ttl()`` result for a key that exists but never expires (as Redis's TTL).
TTL_NONE = -1.0
#: ``ttl()`` result for a key that does not exist (as Redis's TTL).
TTL_MISSING = -2.0


def open(path: str = "fusedb-data", **options) -> "FuseDB":  # noqa: A001 - the API's name
    """Open (creating if missing) the database in directory ``path``.

    Options are the fields of :class:`fusedb.options.Options`. Without ``shards``
    (or with ``mode="embedded"``) the database runs embedded: this process only,
    background work in threads. With ``shards=N`` it runs multiprocess: this
    process becomes the router, N worker processes start, and other processes
    attach with :func:`connect`. Raises ``LockedError`` if another process has
    it open, ``CorruptionError`` if a file fails verification,
    ``InvalidArgumentError`` for bad options.
    """
    if "mode" not in options:
        options["mode"] = "multiprocess" if "shards" in options else "embedded"
    opts = Options(**options)
    store = (RouterStore if opts.mode == "multiprocess" else EmbeddedStore)(path, opts)
    hooks.opened(store, owner=True)
    return FuseDB(store)


def connect(path: str = "fusedb-data") -> "FuseDB":
    """Attach to the multiprocess database open at ``path`` (by a router process
    on this host). Point operations then run directly on its shared memory.
    ``close()`` detaches. Raises NotRunningError if none is open there."""
    return FuseDB(_attach(path))


def _attach(path: str) -> ClientStore:
    store = ClientStore(path)
    hooks.opened(store, owner=False)
    return store


def _coerce_key(key) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise KeyTypeError(f"keys are bytes or str, not {type(key).__name__}")


def _coerce_value(value) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise ValueTypeError(f"values are bytes, not {type(value).__name__}")


class FuseDB:
    """An open database. Thread-safe: any thread may call any method, except that
    ``close()`` must not race with other calls.

    A multiprocess handle pickles (it re-attaches with :func:`connect` where it is
    unpickled) and survives ``fork()``: in the child it re-attaches on first use.
    An embedded handle does neither (ForkedError in the child)."""

    def __init__(self, store: Role):
        self._store = store
        self._opts = opts = store.opts
        self._meta = store.meta
        self._routes = RouteCache(store.meta)
        self._shards = store.shards
        self._max_key = opts.max_key_size
        self._max_value = opts.max_value_size
        self._clock = opts.clock
        self._sync = opts.durability == "sync"
        self._closed = False
        self._forked = False
        self.path = store.path
        hooks.handle(self)

    def _after_fork(self) -> None:
        """In a fork()ed child (fusedb.runtime.hooks): re-attach on first use."""
        if not self._closed:
            self._forked = True
            self._closed = True

    def __reduce__(self):
        if not self._store.multiprocess:
            raise ForkedError("an embedded database cannot be sent to another process; open "
                              "it with shards=N (multiprocess) and pass the handle or its path")
        return (connect, (self.path,))

    def _reattach(self) -> None:
        """In a fork()ed child: become a client of the parent's database."""
        if not self._store.multiprocess:
            raise ForkedError(
                "this handle was opened in embedded mode by the parent process and cannot be "
                "used after fork(); open the database with shards=N (multiprocess) and "
                "attach in the child with fusedb.connect(path)")
        self.__init__(_attach(self.path))

    # -- helpers --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._forked:
            self._reattach()
        if self._closed:
            raise ClosedError("the database is closed")
        self._store.check()

    def _key(self, key) -> bytes:
        if type(key) is not bytes:
            key = _coerce_key(key)
        n = len(key)
        if n == 0 or n > self._max_key:
            raise KeyTooLargeError(f"key length {n} is outside 1..{self._max_key} bytes")
        return key

    def _value(self, value) -> bytes:
        if type(value) is not bytes:
            value = _coerce_value(value)
        if len(value) > self._max_value:
            raise ValueTooLargeError(
                f"value length {len(value)} is over max_value_size={self._max_value}")
        return value

    def _deadline(self, ttl) -> float:
        if ttl is None:
            return 0.0
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise ValueTypeError(f"ttl is seconds (int or float), not {type(ttl).__name__}")
        if not (ttl > 0 and math.isfinite(ttl)):
            raise InvalidArgumentError(f"ttl must be a positive finite number, got {ttl!r}")
        return self._clock() + ttl

    def _stall(self, shard, deadline: float | None) -> float:
        """Wait a little for the worker to free buffer memory, or for WAL ring
        space (the flusher writing it out, or merges bringing the WAL files on
        disk under ``wal_limit_bytes``); raise once the wait passes
        ``write_timeout``. Returns the deadline for the next call.

        Raises DiskError if the WAL cannot be written and the ring is over half
        full; WriteStallError when the wait passes ``write_timeout`` (saying
        whether the WAL limit held the write back, and any background error)."""
        signals.raise_pending()     # no lock is held here: a deferred signal acts now
        now = time.monotonic()
        if shard.flusher.error is not None and shard.ring.free() < shard.ring.cap // 2:
            raise DiskError(f"the WAL cannot be written ({shard.flusher.error}); the write "
                            f"was not applied; reads still work") from shard.flusher.error
        if deadline is None:
            return now + self._opts.write_timeout
        if now > deadline:
            with shard.lock:
                self._meta.stats[shard.no * 8 + S_STALLS] += 1
            why = retry.shard_state(self._meta.faults, shard.no)["background_error"]
            limit = self._opts.wal_limit_bytes
            if shard.ring.hdr[R_WAL_BYTES] >= limit:
                what = (f"the WAL of shard {shard.no} on disk reached its limit ({limit} bytes: "
                        f"wal_max_bytes + wal_file_bytes) and no merge let its oldest files "
                        f"be deleted within write_timeout={self._opts.write_timeout}s")
            else:
                what = f"no buffer memory freed within write_timeout={self._opts.write_timeout}s"
            raise WriteStallError(what + "; the write was not applied"
                                  + (f" (merges cannot run: {why}; they are retried and "
                                     f"writes go on once they succeed)" if why else ""))
        self._store.check()
        self._store.check_router()
        time.sleep(0.0005)
        return deadline

    def _read_modify_write(self, key: bytes, fn):
        """Run ``fn(entry)`` under the key's shard lock, where entry is the key's
        current (kind, payload, exp) or None. ``fn`` returns (result, write) where
        write is None or (kind, value, ivalue, exp) to store. Returns result."""
        h = key_hash(key)
        routes = self._routes
        deadline = None
        attempt = 0
        while True:
            ver, leaf = routes.route(key)
            shard = self._shards[self._meta.shard[leaf]]
            need = False
            end = 0
            shard.lock.acquire()
            try:
                if not routes.valid(ver):
                    continue
                e = shard.read_locked(leaf, key, h)
                if e is NEED_SEGMENTS:
                    need = True
                else:
                    result, write = fn(e)
                    if write is None:
                        return result
                    kind, value, ivalue, exp = write
                    end = shard.write_locked(leaf, key, h, kind, value, ivalue, exp)
                    if end:
                        self._meta.stats[shard.no * 8 + S_LOGICAL] += len(key) + (
                            len(value) if value is not None else 8 if kind == KIND_INT else 0)
            finally:
                shard.lock.release()
            if end:
                if self._sync:
                    shard.flusher.wait_durable(end)
                return result
            if need:
                attempt += 1
                self._store.open_for_retry(self._meta.segs_of(leaf), attempt)
            else:
                deadline = self._stall(shard, deadline)

    # -- point operations -----------------------------------------------------------

    def put(self, key, value, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds if given."""
        if self._closed or self._store.error is not None:
            self._check_open()
        key = self._key(key)
        value = self._value(value)
        exp = 0.0 if ttl is None else self._deadline(ttl)
        h = key_hash(key)
        routes = self._routes
        meta = self._meta
        deadline = None
        while True:
            ver, leaf = routes.route(key)
            shard = self._shards[meta.shard[leaf]]
            lock = shard.lock
            lock.acquire()
            try:
                if not routes.valid(ver):
                    continue
                end = shard.write_locked(leaf, key, h, KIND_VALUE, value, 0, exp)
                if end:
                    meta.stats[shard.no * 8 + S_LOGICAL] += len(key) + len(value)
            finally:
                lock.release()
            if end:
                if self._sync:
                    shard.flusher.wait_durable(end)
                return
            deadline = self._stall(shard, deadline)

    def get(self, key, default=None):
        """The value of ``key`` (bytes; a counter reads as its ASCII decimal), or
        ``default`` if it is missing, deleted or expired."""
        if self._closed or self._store.error is not None:
            self._check_open()
        key = self._key(key)
        h = key_hash(key)
        routes = self._routes
        meta = self._meta
        cache = self._store.segcache
        attempt = 0
        while True:
            ver, leaf = routes.route(key)
            shard = self._shards[meta.shard[leaf]]
            lock = shard.lock
            segs = None
            lock.acquire()
            try:
                if not routes.valid(ver):
                    continue
                e = shard.read_buffers_locked(leaf, key, h)
                if e is None:
                    segids = meta.segs_of(leaf)
                    segs = [cache.get(s) for s in segids]
            finally:
                lock.release()
            if segs is not None:
                if None in segs:
                    attempt += 1
                    self._store.open_for_retry(segids, attempt)
                    continue
                for seg in segs:
                    e = segment_entry(seg, key, h)
                    if e is not None:
                        break
            if e is None or e[0] == KIND_DEL:
                return default
            if e[2] != 0.0 and e[2] <= self._clock():
                return default
            return str(e[1]).encode() if e[0] == KIND_INT else e[1]

    def incr(self, key, delta: int = 1) -> int:
        """Add ``delta`` to the signed 64-bit counter at ``key`` (a missing key
        counts as 0; an ASCII decimal value is parsed, as Redis's INCR does; an
        existing TTL is kept). Returns the new value. Atomic."""
        if self._closed or self._store.error is not None:
            self._check_open()
        key = self._key(key)
        if type(delta) is not int:
            raise ValueTypeError(f"incr delta must be an int, not {type(delta).__name__}")
        if delta < INT64_MIN or delta > INT64_MAX:
            raise IntegerOverflowError(f"incr delta {delta} does not fit in 64 bits")
        now = self._clock()
        # Fast path, the in-buffer merge: the counter's slot is in the active buffer.
        h = key_hash(key)
        ver, leaf = self._routes.route(key)
        shard = self._shards[self._meta.shard[leaf]]
        new = None
        with shard.lock:
            if self._routes.valid(ver):
                new = shard.incr_in_place_locked(leaf, key, h, delta, now)
                if new is not None:
                    self._meta.stats[shard.no * 8 + S_LOGICAL] += len(key) + 8
                    end = shard.last_end
        if new is not None:
            if self._sync:
                shard.flusher.wait_durable(end)
            return new
        return self._read_modify_write(key, ops.op_incr(key, delta, now))

    def decr(self, key, delta: int = 1) -> int:
        """``incr(key, -delta)``."""
        if type(delta) is not int:
            raise ValueTypeError(f"decr delta must be an int, not {type(delta).__name__}")
        return self.incr(key, -delta)

    def delete(self, key) -> bool:
        """Delete ``key``; True if it existed (and had not expired)."""
        self._check_open()
        key = self._key(key)
        return self._read_modify_write(key, ops.op_delete(self._clock()))

    def expire(self, key, ttl: float | None) -> bool:
        """Set ``key`` to expire ``ttl`` seconds from now (None: never). True if the
        key exists."""
        self._check_open()
        key = self._key(key)
        exp = self._deadline(ttl)
        return self._read_modify_write(key, ops.op_expire(exp, self._clock()))

    def ttl(self, key) -> float:
        """Seconds until ``key`` expires; ``TTL_NONE`` (-1.0) if it never does,
        ``TTL_MISSING`` (-2.0) if it does not exist."""
        self._check_open()
        key = self._key(key)
        now = self._clock()
        e = self._read_modify_write(key, ops.op_read)
        if not ops.alive(e, now):
            return TTL_MISSING
        return TTL_NONE if e[2] == 0.0 else e[2] - now

    def get_many(self, keys: Iterable) -> list[bytes | None]:
        """``[get(k) for k in keys]`` (each key read atomically, not the set)."""
        return [self.get(k) for k in keys]

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __getitem__(self, key) -> bytes:
        v = self.get(key)
        if v is None:
            raise FuseDBKeyError(key)
        return v

    def __setitem__(self, key, value) -> None:
        self.put(key, value)

    def __delitem__(self, key) -> None:
        if not self.delete(key):
            raise FuseDBKeyError(key)

    # -- bulk -------------------------------------------------------------------------

    def scan(self, start=None, stop=None, *, prefix=None, limit: int | None = None,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) pairs with start <= key < stop (or keys starting with
        ``prefix``), in key order (descending with ``reverse``), at most ``limit``.

        Each leaf is read from a snapshot taken under its lock; a key appears at
        most once; a scan sees every key that stays unchanged while it runs."""
        self._check_open()
        return _scan.scan(self, start, stop, prefix, limit, reverse)

    def batch(self) -> Batch:
        """A batch of writes applied on exit of ``with db.batch() as b:``, all or
        nothing whatever shards it spans (fusedb.api.batch: isolation and crash
        atomicity)."""
        self._check_open()
        return Batch(self)

    def flush(self) -> None:
        """Merge every buffer into segments now and let the scheduler finish what
        that calls for (splits); returns when done. Writes keep flowing meanwhile."""
        self._check_open()
        self._store.flush()

    # -- introspection and lifecycle ---------------------------------------------------

    def stats(self) -> dict:
        """Counters and gauges: leaves, segments, merges, splits, bytes written,
        buffer fill, arena use, WAL bytes on disk (``wal_bytes``; per shard in
        ``shards``, with the bound ``wal_max_bytes``). Sizes in bytes."""
        self._check_open()
        meta = self._meta
        routes = self._routes.current()
        leaves = routes[2]
        segids: dict[int, int] = {}   # segment id -> file size
        frozen = active = 0
        fill = 0.0
        totals = dict.fromkeys(STAT_FIELDS, 0)
        shards = []
        for shard in self._shards:
            with shard.lock:
                for name_i, name in enumerate(STAT_FIELDS):
                    totals[name] += meta.stats[shard.no * 8 + name_i]
                free = shard.arena.free_count()
                cache = self._store.segcache
                for leaf in leaves:
                    if meta.shard[leaf] != shard.no:
                        continue
                    for segid in meta.segs_of(leaf):
                        seg = cache.get(segid)    # published segments are cached here
                        segids[segid] = seg.size if seg is not None else 0
                    if meta.frozen[leaf] >= 0:
                        frozen += 1
                    a = meta.active[leaf]
                    if a >= 0:
                        active += 1
                        fill += shard.slabs[a].fill()
            # Counted by the shard's flusher (in the worker process, multiprocess)
            # and published in the ring header, so every process sees it.
            shards.append({"shard": shard.no, "slabs_total": shard.arena.nslabs,
                           "slabs_free": free, "wal_bytes": shard.ring.hdr[R_WAL_BYTES],
                           "wal_max_bytes": self._opts.wal_max_bytes})
        seg_bytes = sum(segids.values())
        logical = totals["logical_bytes_written"]
        return {
            "leaves": len(leaves),
            "segments": len(segids),
            "segment_bytes": seg_bytes,
            **totals,
            "write_amplification": (totals["segment_bytes_written"] / logical) if logical else 0.0,
            "active_buffers": active,
            "frozen_buffers": frozen,
            "buffer_fill": (fill / active) if active else 0.0,
            "arena_slabs_total": sum(s["slabs_total"] for s in shards),
            "arena_slabs_used": sum(s["slabs_total"] - s["slabs_free"] for s in shards),
            "wal_bytes": sum(s["wal_bytes"] for s in shards),
            "shards": shards,
            "mode": self._opts.mode,
            "workers": self._worker_stats(),
        }

    def _worker_stats(self) -> list[dict]:
        """Per shard: the process doing its background work, its CPU and memory,
        and the state of its background I/O (fusedb.core.retry.shard_state):
        ``background_error`` (str, or None while healthy), ``last_background_error``
        (the latest one, kept after the shard healed) and ``background_failures``
        (failed attempts since open, each retried)."""
        out = []
        for shard in self._shards:
            pid = self._store.worker_pid(shard.no)
            row = {"shard": shard.no, "pid": pid,
                   "repairs": self._meta.workers[shard.no * 4 + W_REPAIRS],
                   **retry.shard_state(self._meta.faults, shard.no)}
            try:
                p = psutil.Process(pid)
                with p.oneshot():
                    t = p.cpu_times()
                    row.update(cpu_seconds=t.user + t.system, cpu_num=p.cpu_num(),
                               cpu_affinity=p.cpu_affinity(), rss_bytes=p.memory_info().rss)
            except psutil.Error:
                row["alive"] = False
            out.append(row)
        return out

    def close(self) -> None:
        """Merge every buffer into segments, write the manifest and release all shared
        memory. Idempotent. Raises if a background merge had failed."""
        if self._closed:
            return
        self._closed = True
        self._store.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "FuseDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FuseDB {self.path!r}{' closed' if self._closed else ''}>"
