"""The atomic commands beyond put/get/incr: conditional puts, ``add``,
``getdel``, ``getex``, ``touch`` (a mixin of :class:`fusedb.api.db.FuseDB`).

Each is one pure function of the key's entry (fusedb.core.ops ``op_*``), run
by the executor under the key's shard lock like ``update()``: at most one
entry written (one WAL record, whole or absent after a crash), none when the
key is missing or the command's condition is not met. Semantics follow
Redis's commands of the same names (redis.io/commands/set, /getdel, /getex)
except where a docstring says so.
"""

from __future__ import annotations

from fusedb.api import args
from fusedb.core import ops


class Commands:
    """The commands, for a class with ``_check_open()``, ``_args`` (an
    fusedb.api.args.Args), ``_modify`` (the compiled kernel's or the
    executor's ``modify``) and ``_clock``."""

    def _put_options(self, key, value, ttl, nx: bool, xx: bool, keepttl: bool, get: bool):
        """``put`` with any of nx, xx, keepttl, get (FuseDB.put documents them)."""
        self._check_open()
        key = self._args.key(key)
        value = self._args.value(value)
        args.put_options(ttl, nx, xx, keepttl, get)
        exp = self._args.deadline(ttl)
        return self._modify(key, ops.op_set(value, exp, self._clock(), nx, xx, keepttl, get))

    def add(self, key, value, ttl: float | None = None) -> bool:
        """Store ``value`` under ``key`` only if the key is missing, deleted or
        expired (memcached's and Django's ``add``; ``put(..., nx=True)``).
        Returns True if it stored. Errors of ``put``."""
        return self._put_options(key, value, ttl, True, False, False, False)

    def getdel(self, key) -> bytes | None:
        """The value of ``key`` (bytes; a counter as its ASCII decimal), deleting
        the key; None (nothing written) if it is missing, deleted or expired.
        Redis GETDEL. KeyTypeError, KeyTooLargeError; the write errors of
        ``put``."""
        self._check_open()
        key = self._args.key(key)
        return self._modify(key, ops.op_getdel(self._clock()))

    def getex(self, key, ttl: float | None) -> bytes | None:
        """The value of ``key`` (bytes; a counter as its ASCII decimal), the key
        now expiring ``ttl`` seconds from now (None: never, Redis's PERSIST);
        None (nothing written) if it is missing, deleted or expired. Redis
        GETEX EX|PERSIST; plain GETEX is ``get``. KeyTypeError,
        KeyTooLargeError; ValueTypeError, InvalidArgumentError (ttl); the write
        errors of ``put``."""
        self._check_open()
        key = self._args.key(key)
        exp = self._args.deadline(ttl)
        return self._modify(key, ops.op_getex(exp, self._clock()))

    def touch(self, key, ttl: float | None) -> bool:
        """``key`` now expires ``ttl`` seconds from now (None: never); True if
        the key exists. The same as ``expire``, and the errors of ``expire``.
        Named after memcached's and Django's touch (not Redis's TOUCH, which
        only marks an access); their 0 (never, resp. at once) is the adapter's
        to map: here a ttl is positive."""
        return self.expire(key, ttl)
