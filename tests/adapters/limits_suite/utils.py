# Vendored from limits 5.8.0 (github:alisaifee/limits, tag 5.8.0, tests/utils.py).
# Copyright (c) 2023 Ali-Akber Saifee. MIT licence: the full notice is in
# LICENSE.txt in this directory.
# Changed: ALL_STORAGES and ALL_STORAGES_ASYNC hold one parameter, fusedb:// (and
#   async+fusedb://) instead of memory://, redis, memcached, mongodb, valkey; the
#   ASYNC_*_IMPLEMENTATION settings of those are gone; tempfile imported.
#   A ruff directive keeps limits' own style (long lines, unused loop variables).
# ruff: noqa: E501, B007
from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import tempfile
import time

import pytest
from pytest_lazy_fixtures import lf

from limits.limits import RateLimitItem

def fixed_start(fn):
    @functools.wraps(fn)
    def __inner(*a, **k):
        start = time.time()

        while time.time() < math.ceil(start):
            time.sleep(0.01)

        return fn(*a, **k)

    return __inner


def timestamp_based_key_ttl(item: RateLimitItem, now: float | None = None) -> float:
    """
    Return the current timestamp-based key TTL.

    Used for some implementations of thesliding window counter that generates keys based on the timestamp.

    Args:
        item (RateLimitItem): the rate limit item
        now (Optional[float], optional): the current timestamp. If None, generates the current timestamp
    """
    if now is None:
        now = time.time()
    return item.get_expiry() - (now % item.get_expiry())


def async_fixed_start(fn):
    @functools.wraps(fn)
    async def __inner(*a, **k):
        start = time.time()

        while time.time() < math.ceil(start):
            time.sleep(0.01)

        return await fn(*a, **k)

    return __inner


@contextlib.contextmanager
def window(delay_end: float, delay: float | None = None):
    start = time.time()

    if delay is not None:
        while time.time() - start < delay:
            time.sleep(0.001)
    yield (start, start + delay_end)

    while time.time() - start < delay_end:
        time.sleep(0.001)


@contextlib.asynccontextmanager
async def async_window(delay_end: float, delay: float | None = None):
    start = time.time()

    if delay is not None:
        while time.time() - start < delay:
            await asyncio.sleep(0.001)

    yield (start, start + delay_end)

    while time.time() - start < delay_end:
        await asyncio.sleep(0.001)


# The one storage under test here: fusedb://, served by a daemon the session's
# fixture ``fusedb_limits_db`` (conftest.py) starts and stops. The URI must be known
# at collection, which runs in the same process as the fixtures.
FUSEDB_PATH = os.path.join(tempfile.gettempdir(), f"fusedb-limits-{os.getpid()}", "db")
ALL_STORAGES = {
    "fusedb": pytest.param(
        f"fusedb://{FUSEDB_PATH}", {}, lf("fusedb_limits_db"), id="fusedb"
    ),
}
ALL_STORAGES_ASYNC = {
    "fusedb": pytest.param(
        f"async+fusedb://{FUSEDB_PATH}", {}, lf("fusedb_limits_db"), id="fusedb"
    ),
}

all_storage = pytest.mark.parametrize("uri, args, fixture", ALL_STORAGES.values())

moving_window_storage = pytest.mark.parametrize(
    "uri, args, fixture",
    [
        storage
        for name, storage in ALL_STORAGES.items()
        if not name.startswith("memcached")
    ],
)

sliding_window_counter_storage = pytest.mark.parametrize(
    "uri, args, fixture", ALL_STORAGES.values()
)

async_all_storage = pytest.mark.parametrize(
    "uri, args, fixture", ALL_STORAGES_ASYNC.values()
)

async_moving_window_storage = pytest.mark.parametrize(
    "uri, args, fixture",
    [
        storage
        for name, storage in ALL_STORAGES_ASYNC.items()
        if not name.startswith("memcached")
    ],
)

async_sliding_window_counter_storage = pytest.mark.parametrize(
    "uri, args, fixture", ALL_STORAGES_ASYNC.values()
)
