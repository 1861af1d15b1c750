"""``async+fusedb://``: the ``limits.aio`` storage.

Its coroutines call FuseDB directly, without a thread: an operation takes a few
microseconds, less than a hop to a thread (``asyncio.to_thread``, about 50 µs).
While a write stalls (the database's buffers full, at most its
``write_timeout`` seconds) the event loop waits with it. Registered as
fusedb.limits.storage is; the logic is in fusedb.limits._core.
"""

from __future__ import annotations

from limits.aio.storage.base import MovingWindowSupport, SlidingWindowCounterSupport, Storage
from limits.storage.base import TimestampedSlidingWindow

from fusedb.errors import FuseDBError
from fusedb.limits import _core


class AsyncFuseDBStorage(Storage, MovingWindowSupport, SlidingWindowCounterSupport,
                         TimestampedSlidingWindow):
    """:class:`fusedb.limits.FuseDBStorage` for ``limits.aio`` strategies, with the
    same URI (scheme ``async+fusedb``), options, errors and stored keys: the two
    share one database and one handle per process."""

    STORAGE_SCHEME = ["async+fusedb"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        self._core = _core.core(uri, options)
        super().__init__(uri, wrap_exceptions=wrap_exceptions)

    @property
    def base_exceptions(self) -> type[Exception]:
        return FuseDBError

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._core.incr(key, expiry, amount)

    async def decr(self, key: str, amount: int = 1) -> int:
        return self._core.decr(key, amount)

    async def get(self, key: str) -> int:
        return self._core.get(key)

    async def get_expiry(self, key: str) -> float:
        return self._core.get_expiry(key)

    async def check(self) -> bool:
        return self._core.check()

    async def reset(self) -> int | None:
        return self._core.reset()

    async def clear(self, key: str) -> None:
        self._core.clear(key)

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return self._core.acquire_entry(key, limit, expiry, amount)

    async def get_moving_window(self, key: str, limit: int, expiry: int
                                ) -> tuple[float, int]:
        return self._core.get_moving_window(key, limit, expiry)

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int,
                                           amount: int = 1) -> bool:
        return self._core.acquire_sliding_window_entry(self.sliding_window_keys, key, limit,
                                                       expiry, amount)

    async def get_sliding_window(self, key: str, expiry: int
                                 ) -> tuple[int, float, int, float]:
        return self._core.get_sliding_window(self.sliding_window_keys, key, expiry)

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        self._core.clear_sliding_window(self.sliding_window_keys, key, expiry)
