"""``fusedb://``: the synchronous ``limits`` storage (flask-limiter, slowapi).

Defining :class:`FuseDBStorage` registers the scheme: limits' ``StorageRegistry``
metaclass (limits/_storage_scheme.py, limits 5.8.0) records every
``STORAGE_SCHEME`` of a ``Storage`` subclass, and ``storage_from_string`` looks
the URI's scheme up there. The logic is in fusedb.limits._core.
"""

from __future__ import annotations

from limits.storage.base import (MovingWindowSupport, SlidingWindowCounterSupport, Storage,
                                 TimestampedSlidingWindow)

from fusedb.errors import FuseDBError
from fusedb.limits import _core


class FuseDBStorage(Storage, MovingWindowSupport, SlidingWindowCounterSupport,
                    TimestampedSlidingWindow):
    """Rate-limit state in a FuseDB database, shared by every process of the host
    that uses the same URI: ``fusedb:///abs/path/to/db?option=value``.

    Options (in the query, or as keyword arguments, which win): ``start``
    (default true: start a ``fusedb serve`` daemon for the path when none runs),
    ``timeout`` (seconds to wait for it, default 60), ``key_prefix`` (default
    ``LIMITS``: every key is ``LIMITS:<limit key>``), ``db`` (an open FuseDB
    handle to use instead of the path), and the daemon's options (fusedb.Options
    fields such as ``shards``, ``durability``, ``max_value_size``), used only by
    the daemon this storage starts. ``wrap_exceptions=True`` raises FuseDB's
    errors as ``limits.errors.StorageError``.

    Raises ConfigurationError (limits.errors) for a bad URI or option,
    fusedb.NotRunningError when no database runs there and none can start.
    docs/adapters-limits.md says what each strategy stores."""

    STORAGE_SCHEME = ["fusedb"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        self._core = _core.core(uri, options)
        super().__init__(uri, wrap_exceptions=wrap_exceptions)

    @property
    def base_exceptions(self) -> type[Exception]:
        return FuseDBError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._core.incr(key, expiry, amount)

    def decr(self, key: str, amount: int = 1) -> int:
        return self._core.decr(key, amount)

    def get(self, key: str) -> int:
        return self._core.get(key)

    def get_expiry(self, key: str) -> float:
        return self._core.get_expiry(key)

    def check(self) -> bool:
        return self._core.check()

    def reset(self) -> int | None:
        return self._core.reset()

    def clear(self, key: str) -> None:
        self._core.clear(key)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return self._core.acquire_entry(key, limit, expiry, amount)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        return self._core.get_moving_window(key, limit, expiry)

    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int,
                                     amount: int = 1) -> bool:
        return self._core.acquire_sliding_window_entry(self.sliding_window_keys, key, limit,
                                                       expiry, amount)

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        return self._core.get_sliding_window(self.sliding_window_keys, key, expiry)

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        self._core.clear_sliding_window(self.sliding_window_keys, key, expiry)
