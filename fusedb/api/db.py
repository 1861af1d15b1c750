"""The public API: :func:`open` and :class:`FuseDB`.

``FuseDB`` validates arguments (fusedb.api.args) and hands every operation to
its executor (fusedb.api.executor), the one place operations run: route the key
to a leaf with the cached routing table, take the leaf's shard lock, check the
routing version is unchanged, read or write the leaf's buffers, release; stall
and retry, or wait until durable (docs/design.md, "Point operations").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from fusedb.api import args, scan as _scan, start as start_mod
from fusedb.api.args import Args
from fusedb.api.batch import Batch
from fusedb.api.commands import Commands
from fusedb.api.executor import Executor
from fusedb.api.mapping import Mapping
from fusedb.api.stats import stats as _stats
from fusedb.api.transaction import Transact, Transaction
from fusedb.core import ops
from fusedb.core.ops import value_of
from fusedb.core.entry import INT64_MAX, INT64_MIN
from fusedb.errors import ClosedError, ForkedError, InvalidArgumentError
from fusedb.options import Options, check_names
from fusedb.router.router import RouterStore
from fusedb.runtime import client, hooks
from fusedb.runtime.client import ClientStore
from fusedb.runtime.embedded import EmbeddedStore
from fusedb.runtime.state import Role

_INF = float("inf")
T = TypeVar("T")

#: ``ttl()`` result for a key that exists but never expires (as Redis's TTL).
TTL_NONE = -1.0
#: ``ttl()`` result for a key that does not exist (as Redis's TTL).
TTL_MISSING = -2.0


def open(path: str | bytes | os.PathLike = "fusedb-data",  # noqa: A001 - the API's name
         **options) -> FuseDB:
    """Open (creating if missing) the database in directory ``path``.

    Options are the fields of :class:`fusedb.options.Options`. Without ``shards``
    (or with ``mode="embedded"``) the database runs embedded: this process only,
    background work in threads. With ``shards=N`` it runs multiprocess: this
    process becomes the router, N worker processes start, and other processes
    attach with :func:`connect`; ``group=`` shares it (README, "Who can
    attach"). Raises ``LockedError`` if it is open (here or elsewhere),
    ``CorruptionError`` if a file fails verification, ``InvalidArgumentError``
    for bad options (``UnknownOptionError``: unknown) or a ``path`` that is not
    a str, bytes or os.PathLike, ``NotADatabaseError`` (a file, or not a
    database), ``PermissionDeniedError`` (no access).
    """
    path = args.db_path(path)
    check_names(options, "open()")
    if "mode" not in options:
        options["mode"] = "multiprocess" if "shards" in options else "embedded"
    opts = Options(**options)
    store = (RouterStore if opts.mode == "multiprocess" else EmbeddedStore)(path, opts)
    hooks.opened(store, owner=True)
    return FuseDB(store)


def connect(path: str | bytes | os.PathLike = "fusedb-data", *, start: bool = False,
            timeout: float = 60.0, **options) -> FuseDB:
    """Attach to the multiprocess database open at ``path`` (by a ``fusedb serve``
    daemon, or a process that called ``open(path, shards=N)``, on this host).
    Point operations then run directly on its shared memory; ``close()``
    detaches. Waits (up to ``timeout`` seconds) while an open is in progress.
    Raises NotRunningError if none is open there, PermissionDeniedError if it is
    another user's, not shared with a group of this process.

    ``start=True``: if none is open, start a detached ``fusedb serve path`` with
    ``options`` (fields of fusedb.options.Options, e.g. ``shards=4``,
    ``durability="sync"``; a daemon already running keeps its own) and attach
    to it; safe when many processes do it at once (one daemon results:
    fusedb.api.start). Waits up to ``timeout`` seconds for the daemon. Raises
    NotRunningError if the database runs embedded or the daemon cannot start
    (its message says why), InvalidArgumentError for bad options or options
    without ``start=True`` (UnknownOptionError for an unknown one), or a
    ``path`` that is not a str, bytes or os.PathLike."""
    path = args.db_path(path)
    check_names(options, "connect()", set(Options.__dataclass_fields__) | {"start", "timeout"})
    if not start:
        if options:
            raise InvalidArgumentError(f"options ({', '.join(sorted(options))}) are for the "
                                       f"daemon connect(path, start=True) starts; connect "
                                       f"without start=True uses the running database's")
        return FuseDB(_attach(path, timeout))
    return FuseDB(start_mod.connect_starting(path, _attach, options, timeout))


def _attach(path: str, timeout: float = 60.0) -> ClientStore:
    store = client.connect(path, timeout)
    hooks.opened(store, owner=False)
    return store


class FuseDB(Commands, Mapping):
    """An open database. Thread-safe: any thread may call any method, except that
    ``close()`` must not race with other calls. A mapping of bytes keys to bytes
    values, iterated in key order by scans (fusedb.api.mapping).

    A multiprocess handle pickles (it re-attaches with :func:`connect` where it is
    unpickled) and survives ``fork()``: in the child it re-attaches on first use.
    An embedded handle does neither (ForkedError in the child)."""

    def __init__(self, store: Role):
        self._store = store
        self._x = x = Executor(store)
        self._args = Args(store.opts)
        self._max_key = store.opts.max_key_size
        self._max_value = store.opts.max_value_size
        self._clock = store.opts.clock
        # Read by fusedb.testing's helpers (the tests' one way to look inside).
        self._meta, self._routes, self._shards = x.meta, x.routes, x.shards
        # The per-operation entry points: the compiled kernel's, or the executor's.
        k = x.kernel
        self._put = k.put if k is not None else x.put
        self._incr = k.incr if k is not None else x.incr
        self._modify = k.modify if k is not None else x.modify
        self._kget = k.get if k is not None else None
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
        if self._x.fn_threads:
            self._x.reentered()
        if self._forked:
            self._reattach()
        if self._closed:
            raise ClosedError("the database is closed")
        self._store.check()

    # -- point operations -----------------------------------------------------------
    # put, get and incr validate inline (no call for the common case: a bytes key of
    # a valid length) and run on the executor's hot path (fusedb.api.executor).

    # The options are positional-or-keyword, not keyword-only: CPython looks each
    # keyword-only default up in a dict on every call (put was 20 % slower).
    def put(self, key, value, ttl: float | None = None, nx: bool = False,
            xx: bool = False, keepttl: bool = False, get: bool = False):
        """Store ``value`` (bytes-like, at most ``max_value_size`` bytes) under
        ``key`` (bytes or str, 1..``max_key_size`` bytes), expiring after ``ttl``
        seconds if given (else never: a previous TTL is discarded). Returns None.

        Options, atomic with the write (Redis SET NX|XX|KEEPTTL|GET,
        redis.io/commands/set): ``nx`` stores only if the key is missing,
        deleted or expired, ``xx`` only if it is live; then the result is
        whether it stored (bool). ``keepttl``: a live key keeps its expiry.
        ``get``: the result is the key's old live value (bytes, a counter as its
        ASCII decimal) or None, whether or not it stored. Pass the options by
        name; each is a bool.

        KeyTypeError, KeyTooLargeError, ValueTypeError (also an option that is
        not a bool), ValueTooLargeError, InvalidArgumentError (ttl; ``nx`` with
        ``xx``; ``keepttl`` with ``ttl``);
        WriteStallError, DiskError when the write cannot be applied in
        ``write_timeout``."""
        if nx or xx or keepttl or get:
            return self._put_options(key, value, ttl, nx, xx, keepttl, get)
        if self._closed or self._store.error is not None:
            self._check_open()
        if type(key) is not bytes or not 0 < len(key) <= self._max_key:
            key = self._args.key(key)
        if type(value) is not bytes or len(value) > self._max_value:
            value = self._args.value(value)
        self._put(key, value, 0.0 if ttl is None else self._args.deadline(ttl))

    def get(self, key, default=None):
        """The value of ``key`` (bytes; a counter reads as its ASCII decimal), or
        ``default`` if it is missing, deleted or expired."""
        if self._closed or self._store.error is not None:
            self._check_open()
        if type(key) is not bytes or not 0 < len(key) <= self._max_key:
            key = self._args.key(key)
        if self._kget is not None:
            v = self._kget(key)
        else:
            v = value_of(self._x.get(key), self._clock)
        return default if v is None else v

    def incr(self, key, delta: int = 1, ttl: float | None = None,
             xx: bool = False) -> int | None:
        """Add ``delta`` to the signed 64-bit counter at ``key`` (a missing,
        deleted or expired key counts as 0; an ASCII decimal value is parsed, as
        Redis's INCR does). Returns the new value. Atomic.

        ``ttl`` (seconds) is set only when this call creates the key; a live key
        keeps its expiry (none, or the one it has), so ``incr(k, 1, ttl=60)`` is
        a fixed-window counter in one call. ``xx`` (by name, a bool): a key that
        is not alive is left so and the result is None (nothing written).

        NotAnIntegerError, IntegerOverflowError (nothing written then);
        ValueTypeError (delta, ttl, xx), InvalidArgumentError (ttl; ``xx`` with
        a ``ttl``, which could never apply); the key and write errors of
        ``put``."""
        if self._closed or self._store.error is not None:
            self._check_open()
        if type(key) is not bytes or not 0 < len(key) <= self._max_key:
            key = self._args.key(key)
        if type(delta) is not int or not INT64_MIN <= delta <= INT64_MAX:
            args.delta(delta)       # raises
        now = self._clock()
        if ttl is None:
            if not xx:
                return self._incr(key, delta, now)
            if xx is not True:
                args.incr_options(None, xx)     # raises: not a bool
            return self._incr(key, delta, now, 0.0, True)
        if xx:
            args.incr_options(ttl, xx)      # raises
        if (type(ttl) is not int and type(ttl) is not float) or not 0 < ttl < _INF:
            ttl = args.ttl_seconds(ttl)     # raises, or an int/float subclass
        return self._incr(key, delta, now, now + ttl)

    def decr(self, key, delta: int = 1, ttl: float | None = None,
             xx: bool = False) -> int | None:
        """``incr(key, -delta, ttl, xx=xx)``."""
        if type(delta) is not int:
            args.delta(delta, "decr")       # raises ValueTypeError
        return self.incr(key, -delta, ttl, xx=xx)

    def delete(self, key) -> bool:
        """Delete ``key``; True if it existed (and had not expired)."""
        self._check_open()
        key = self._args.key(key)
        return self._modify(key, ops.op_delete(self._clock()))

    def expire(self, key, ttl: float | None) -> bool:
        """Set ``key`` to expire ``ttl`` seconds from now (None: never). True if the
        key exists (nothing written otherwise). Also ``touch``. KeyTypeError,
        KeyTooLargeError; ValueTypeError, InvalidArgumentError (ttl); the write
        errors of ``put``."""
        self._check_open()
        key = self._args.key(key)
        exp = self._args.deadline(ttl)
        return self._modify(key, ops.op_expire(exp, self._clock()))

    def ttl(self, key) -> float:
        """Seconds until ``key`` expires; ``TTL_NONE`` (-1.0) if it never does,
        ``TTL_MISSING`` (-2.0) if it does not exist."""
        self._check_open()
        key = self._args.key(key)
        now = self._clock()
        e = self._x.read(key)
        if not ops.alive(e, now):
            return TTL_MISSING
        return TTL_NONE if e[2] == 0.0 else e[2] - now

    def update(self, key, fn: Callable[[bytes | None], bytes | None],
               ttl: float | None = None) -> bytes | None:
        """Atomically replace the value of ``key`` by ``fn(current)``.

        Under the key's shard lock, ``fn`` is called with the key's live value
        (bytes; a counter reads as its ASCII decimal, as ``get`` returns it), or
        None if the key is missing, deleted or expired. ``fn`` returns the new
        value (bytes-like, as ``put`` takes) to store, or None to delete the key
        (if it exists; a missing key stays missing). With ``ttl=None`` the key
        keeps its expiry (none for a new key); with ``ttl`` (seconds, validated as
        ``put``'s) the stored value expires ``ttl`` seconds from now. Returns what
        was stored: the bytes, or None.

        ``fn`` returning the very object it was given (``fn(v) is v``, e.g. a
        check that decides to change nothing) with ``ttl=None`` writes nothing.

        ``fn`` runs while this thread holds the key's shard lock, which every
        thread and process using the database shares: it must be quick and must
        not call the database: a call from ``fn`` on this handle raises
        InvalidArgumentError (the lock is not reentrant: it would deadlock), which
        propagates out of ``fn`` unless ``fn`` catches it. A signal (Ctrl-C) acts
        inside ``fn`` at once. ``fn`` may be called more than once (the operation
        retries when the buffer is full); only the last call's return is stored.

        If ``fn`` raises, nothing is written and the exception propagates
        unchanged. InvalidArgumentError if ``fn`` is not callable; ValueTypeError
        if it returns neither bytes-like nor None,
        ValueTooLargeError if its value is over ``max_value_size`` (nothing
        written). Also the errors of ``put``."""
        if self._closed or self._store.error is not None:
            self._check_open()
        if type(key) is not bytes or not 0 < len(key) <= self._max_key:
            key = self._args.key(key)
        fn = self._x.user_fn(args.callback(fn))
        exp = None if ttl is None else self._clock() + args.ttl_seconds(ttl)
        return self._modify(key, ops.op_update(fn, self._args.value, exp, self._clock))

    def get_many(self, keys: Iterable) -> list[bytes | None]:
        """``[get(k) for k in keys]`` (each key read atomically, not the set)."""
        return [self.get(k) for k in keys]

    # -- bulk -------------------------------------------------------------------------

    def scan(self, start=None, stop=None, *, prefix=None, limit: int | None = None,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) pairs with start <= key < stop (or keys starting with
        ``prefix``), in key order (descending with ``reverse``), at most ``limit``.

        Each leaf is read from a snapshot taken under its lock; a key appears at
        most once; a scan sees every key that stays unchanged while it runs."""
        self._check_open()
        return _scan.scan(self._x, self._check_open, lambda: self._closed, start, stop, prefix,
                          limit, reverse)

    def batch(self) -> Batch:
        """A batch of writes applied on exit of ``with db.batch() as b:``, all or
        nothing whatever shards it spans (fusedb.api.batch: isolation and crash
        atomicity)."""
        self._check_open()
        return Batch(self._x, self._args, self._check_open)

    def transact(self, fn: Callable[[Transaction], T], keys: Iterable | None = None) -> T:
        """Run ``fn(tx)`` as one transaction and return what it returns
        (fusedb.api.transaction): under the locks of every shard ``keys`` (keys,
        bytes or str) live in, all shards if None; ``tx`` reads and writes at
        once, and its writes are applied when fn returns, as a batch's are (one
        WAL record per shard; nothing if fn raises, which propagates). fn may
        run more than once and must not call the database. Redis's MULTI/EXEC
        and EVAL run on it. Errors of ``batch`` commits and of tx's methods."""
        self._check_open()
        keys = None if keys is None else [self._args.key(k) for k in keys]
        return self._x.run(Transact(self._x.user_fn(args.callback(fn)), keys, self._args))

    def flush(self) -> None:
        """Merge every buffer into segments now and let the scheduler finish what
        that calls for (splits); returns when done. Writes keep flowing meanwhile."""
        self._check_open()
        self._store.flush()

    # -- introspection and lifecycle ---------------------------------------------------

    def stats(self) -> dict:
        """Counters and gauges: leaves, segments, merges, splits, bytes written,
        buffer fill, arena use, WAL bytes on disk (``wal_bytes``; per shard in
        ``shards``, with the bound ``wal_max_bytes``, and the shard's leaves,
        merges, splits and write amplification), the worker processes
        (``workers``), the attached processes (``clients``: dicts of ``pid`` and
        ``since``, unix seconds; ``clients_unlisted``: attaches past the 256
        listed). Sizes in bytes."""
        self._check_open()
        return _stats(self._x)

    def close(self) -> None:
        """Merge every buffer into segments, write the manifest and release all shared
        memory. Idempotent. Raises if a background merge had failed."""
        if self._closed:
            return
        x = self._x
        if x.fn_threads and threading.get_ident() in x.fn_threads:
            x.reentered()       # close() from update()'s fn: refused
        self._closed = True
        self._store.close()
        if x.fn_threads:
            x.reentered()       # a signal noted inside FuseDB acts now, after the close

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def max_value_size(self) -> int:
        """The largest value this database stores, in bytes (its ``max_value_size``
        option; a client's is its daemon's)."""
        return self._max_value

    def __enter__(self) -> FuseDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FuseDB {self.path!r}{' closed' if self._closed else ''}>"
