"""A Django cache backend on FuseDB: ``fusedb.django.FuseDBCache``.

    CACHES = {"default": {"BACKEND": "fusedb.django.FuseDBCache",
                          "LOCATION": "/var/lib/myapp/fusedb"}}

Every process of the app (gunicorn or uvicorn workers, management commands,
Celery workers) that uses the cache attaches to one FuseDB database: the first
one starts a ``fusedb serve LOCATION`` daemon (``fusedb.connect(LOCATION,
start=True)``), the others attach to it. An operation is one FuseDB call on shared
memory; there is no server round trip. docs/adapters-django.md is the user guide.

The contract is Django 5.2's ``django/core/cache/backends/base.py`` (BaseCache)
and the behaviour of its locmem and Redis backends
(``django/core/cache/backends/locmem.py``, ``redis.py``):

- Timeouts (seconds): the default (``TIMEOUT``, 300) when none is given; None:
  never expires; ``<= 0``: expires at once (``set`` deletes the key, as the
  Redis backend does). Timeouts are relative, also past 30 days.
- Keys: ``NAMESPACE + make_key(key, version)`` encoded as UTF-8, so
  ``KEY_PREFIX``, ``VERSION`` and ``KEY_FUNCTION`` work as in Django. Django
  only warns (CacheKeyWarning) for keys over 250 characters; FuseDB refuses a
  stored key over ``max_key_size`` bytes (512 by default): KeyTooLargeError, a
  ValueError.
- Values: an ``int`` within signed 64 bits is stored as its ASCII decimal, so
  ``incr``/``decr`` run as one atomic FuseDB ``incr``; anything else is pickled
  (``pickle.HIGHEST_PROTOCOL``; pickling errors propagate and write nothing).
  A stored value over ``max_value_size`` bytes (16 KiB by default, a daemon
  option) raises ValueTooLargeError (a ValueError) from ``set``/``add``.
- ``clear()`` deletes the keys under ``NAMESPACE`` only: the database may hold
  other data (a ``limits`` storage, the app's own keys).
- ``close()`` does nothing: Django calls it after every request, and the
  process's handle is shared by every cache, thread and request.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import threading

from django.core.cache.backends.base import DEFAULT_TIMEOUT, MEMCACHE_MAX_KEY_LENGTH, BaseCache

import fusedb
from fusedb.errors import ClosedError, InvalidArgumentError, NotAnIntegerError, \
    ValueTooLargeError

__all__ = ["FuseDBCache", "forget"]

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
#: Pickle protocol >= 2 output starts with the PROTO opcode; a decimal never does.
PICKLED = b"\x80"
#: The options of a daemon (fusedb.Options fields; its clock and mode are its own).
DAEMON_OPTIONS = {f.name for f in dataclasses.fields(fusedb.Options)} - {"clock", "mode"}
#: Keys ``clear()`` collects before deleting them in one batch.
CLEAR_CHUNK = 256

#: The characters Django warns about in keys (django/core/cache/backends/base.py,
#: memcached_error_chars_re), compiled here: Django's lazy regex costs µs per key.
_KEY_WARN_CHARS = re.compile(r"[\x00-\x20\x7f]")

_handles: dict[str, fusedb.FuseDB] = {}     # this process's handle per database path
_handles_lock = threading.Lock()


def dumps(value) -> bytes:
    """``value`` as stored: an int of signed 64 bits as ASCII decimal (so FuseDB's
    ``incr`` works on it), anything else pickled. Raises what pickle raises."""
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return b"%d" % value
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def loads(data: bytes):
    """The value :func:`dumps` stored as ``data``."""
    return pickle.loads(data) if data[:1] == PICKLED else int(data)


def forget(location: str | None = None) -> None:
    """Detach this process's shared handle of the database at ``location`` (all
    of them when None). The next cache operation attaches again (starting the
    daemon if ``start`` is set). For tests and for a process about to stop the
    daemon; Django never needs it."""
    with _handles_lock:
        paths = list(_handles) if location is None else [os.path.abspath(location)]
        dbs = [_handles.pop(p) for p in paths if p in _handles]
    for db in dbs:
        db.close()


class FuseDBCache(BaseCache):
    """Django's ``BACKEND = "fusedb.django.FuseDBCache"``; Django builds it as
    ``FuseDBCache(LOCATION, params)``.

    ``LOCATION``: the database directory (made absolute; relative paths are
    taken from the current directory). ``OPTIONS``:

    - ``start`` (bool, default True): start a ``fusedb serve`` daemon when none
      runs; False: attach only (NotRunningError if none runs).
    - ``connect_timeout`` (seconds, default 60): longest wait for the daemon.
    - ``NAMESPACE`` (str or bytes, default ``"django:"``): prefix of every stored
      key; ``clear()`` deletes what is under it.
    - ``MAX_ENTRIES``, ``CULL_FREQUENCY``: ignored (no culling, as the Redis and
      memcached backends; set TIMEOUT instead).
    - anything else: options of the daemon it starts (fields of
      fusedb.options.Options, e.g. ``shards``, ``durability``,
      ``max_value_size``); a daemon already running keeps its own.
      InvalidArgumentError (when Django builds the cache) names a bad one.
    """

    def __init__(self, location: str, params: dict):
        super().__init__(params)
        if not location:
            raise InvalidArgumentError("FuseDBCache needs LOCATION: the database directory")
        self._path = os.path.abspath(location)
        options = dict(params.get("OPTIONS") or {})
        for ignored in ("MAX_ENTRIES", "CULL_FREQUENCY"):
            options.pop(ignored, None)
        ns = options.pop("NAMESPACE", "django:")
        self._ns = ns.encode() if isinstance(ns, str) else bytes(ns)
        self._start = bool(options.pop("start", True))
        self._timeout = float(options.pop("connect_timeout", 60.0))
        # Checked now (a running daemon would not look at them): names, then values.
        unknown = sorted(set(options) - DAEMON_OPTIONS)
        if unknown:
            raise InvalidArgumentError(
                f"FuseDBCache OPTIONS: unknown option(s) {', '.join(unknown)}; besides start, "
                f"connect_timeout and NAMESPACE they are the daemon's: "
                f"{', '.join(sorted(DAEMON_OPTIONS))}")
        fusedb.Options(mode="multiprocess", **options)      # InvalidArgumentError
        self._options = options

    # -- the shared handle ----------------------------------------------------------

    @property
    def _db(self) -> fusedb.FuseDB:
        """This process's handle of the database, attached on first use (the
        daemon started if ``start``). NotRunningError if none can be reached."""
        db = _handles.get(self._path)
        if db is not None:
            return db
        with _handles_lock:
            db = _handles.get(self._path)
            if db is None:
                if self._start:
                    db = fusedb.connect(self._path, start=True, timeout=self._timeout,
                                        **self._options)
                else:
                    db = fusedb.connect(self._path, timeout=self._timeout)
                _handles[self._path] = db
            return db

    def _run(self, op, *args):
        """``op(db, *args)``; if the handle is closed (the daemon was stopped or
        restarted: FuseDB raises ClosedError before the operation runs), attach
        again once and retry."""
        db = self._db
        try:
            return op(db, *args)
        except ClosedError:
            with _handles_lock:
                if _handles.get(self._path) is db:
                    del _handles[self._path]
            db.close()                  # unmaps what is left of the old attach
            return op(self._db, *args)

    def _check_size(self, key, data: bytes) -> None:
        """ValueTooLargeError (a ValueError) naming ``key`` and the fix when the
        stored form of its value is over the database's ``max_value_size``."""
        limit = self._db.max_value_size
        if len(data) > limit:
            raise ValueTooLargeError(
                f"FuseDBCache: the value of {key!r} takes {len(data)} bytes stored (pickled), "
                f"over the database's max_value_size={limit}: set a larger "
                f"OPTIONS['max_value_size'] (it applies when the daemon starts: fusedb stop "
                f"{self._path} first if one runs)")

    def _key(self, key, version=None) -> bytes:
        return self._ns + self.make_and_validate_key(key, version=version).encode()

    def validate_key(self, key: str) -> None:
        """Django's warnings (CacheKeyWarning), computed only for a key that
        draws one."""
        if len(key) > MEMCACHE_MAX_KEY_LENGTH or _KEY_WARN_CHARS.search(key):
            super().validate_key(key)

    def get_backend_timeout(self, timeout=DEFAULT_TIMEOUT) -> float | None:
        """The TTL in seconds from now (a float; 0.0: expire at once) or None
        (never expires)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return None if timeout is None else max(0.0, float(timeout))

    # -- BaseCache -----------------------------------------------------------------

    def get(self, key, default=None, version=None):
        data = self._run(fusedb.FuseDB.get, self._key(key, version))
        return default if data is None else loads(data)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None) -> None:
        k, data, ttl = self._key(key, version), dumps(value), self.get_backend_timeout(timeout)
        if ttl == 0:
            self._run(fusedb.FuseDB.delete, k)
        else:
            self._check_size(key, data)
            self._run(fusedb.FuseDB.put, k, data, ttl)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None) -> bool:
        """Store if ``key`` is missing or expired, atomically (FuseDB's ``add``);
        True if stored. With a timeout <= 0 nothing is stored: True if the key
        was missing (as if stored and expired at once)."""
        k, data, ttl = self._key(key, version), dumps(value), self.get_backend_timeout(timeout)
        if ttl == 0:
            return not self._run(fusedb.FuseDB.__contains__, k)
        self._check_size(key, data)
        return self._run(fusedb.FuseDB.add, k, data, ttl)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None) -> bool:
        k, ttl = self._key(key, version), self.get_backend_timeout(timeout)
        if ttl == 0:
            return self._run(fusedb.FuseDB.delete, k)
        return self._run(fusedb.FuseDB.touch, k, ttl)

    def delete(self, key, version=None) -> bool:
        return self._run(fusedb.FuseDB.delete, self._key(key, version))

    def has_key(self, key, version=None) -> bool:
        return self._run(fusedb.FuseDB.__contains__, self._key(key, version))

    def incr(self, key, delta=1, version=None) -> int:
        """Add ``delta`` to the int at ``key`` in one atomic FuseDB ``incr`` (exact
        across processes); the key keeps its expiry. Returns the new value.
        ValueError if the key is missing or expired; TypeError if its value is not
        an int of signed 64 bits (also True/False and larger ints, which are
        pickled); IntegerOverflowError (an OverflowError) past signed 64 bits."""
        try:
            n = self._run(_incr_existing, self._key(key, version), delta)
        except NotAnIntegerError as e:
            raise TypeError(f"the cached value of {key!r} is not an integer of signed "
                            f"64 bits: FuseDBCache.incr adds only to those") from e
        if n is None:
            raise ValueError(f"Key '{key}' not found")   # Django's message
        return n

    def get_many(self, keys, version=None) -> dict:
        made = {self._key(key, version): key for key in keys}
        values = self._run(fusedb.FuseDB.get_many, list(made))
        return {key: loads(v) for key, v in zip(made.values(), values) if v is not None}

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None) -> list:
        """One FuseDB batch (all or nothing) when the values fit one buffer,
        else one ``set`` each. Returns [] (nothing fails silently)."""
        ttl = self.get_backend_timeout(timeout)
        pairs = [(self._key(key, version), dumps(value)) for key, value in data.items()]
        if ttl == 0:
            self._run(_delete_all, [k for k, _ in pairs])
        elif pairs:
            for key, (_k, value) in zip(data, pairs):
                self._check_size(key, value)
            self._run(_put_all, pairs, ttl)
        return []

    def delete_many(self, keys, version=None) -> None:
        made = [self._key(key, version) for key in keys]
        if made:
            self._run(_delete_all, made)

    def clear(self) -> None:
        """Delete every key under ``NAMESPACE`` (not the whole database)."""
        while True:
            chunk = self._run(_keys_under, self._ns)
            if not chunk:
                return
            self._run(_delete_all, chunk)

    def close(self, **kwargs) -> None:
        """Nothing: the handle is the process's (see :func:`forget`)."""


def _incr_existing(db: fusedb.FuseDB, key: bytes, delta: int) -> int | None:
    return db.incr(key, delta, xx=True)


def _put_all(db: fusedb.FuseDB, pairs: list, ttl: float | None) -> None:
    try:
        with db.batch() as b:
            for k, v in pairs:
                b.put(k, v, ttl)
    except InvalidArgumentError:        # more than one buffer holds: one put each
        for k, v in pairs:
            db.put(k, v, ttl)


def _keys_under(db: fusedb.FuseDB, prefix: bytes) -> list[bytes]:
    return [k for k, _ in db.scan(prefix=prefix, limit=CLEAR_CHUNK)]


def _delete_all(db: fusedb.FuseDB, keys: list) -> None:
    try:
        with db.batch() as b:
            for k in keys:
                b.delete(k)
    except InvalidArgumentError:
        for k in keys:
            db.delete(k)
