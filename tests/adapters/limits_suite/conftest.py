"""Fixtures for limits' own tests (vendored here from limits 5.8.0) pointed at
``fusedb://``: one daemon for the session, its keys deleted before each test.

limits' suite gives every test a fresh ``memory://`` storage, and several tests
use the same limit keys, so each test starts from an empty storage here too.
The daemon's path is outside pytest's temporary directory (utils.FUSEDB_PATH,
fixed at collection): the per-test leak guard (tests/conftest.py) stops every
daemon of a database under that directory after each test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from fusedb.limits import FuseDBStorage, forget

from .utils import FUSEDB_PATH


#: limits.aio twins of the sync tests that wait 1.7 s or more on real windows: marked
#: ``slow`` (run with -m slow) to keep the default run near 40 s. Their sync twins
#: run by default, and both storages run the same fusedb.limits._core code.
SLOW_ASYNC = {
    "test_sliding_window_counter_stats", "test_moving_window", "test_moving_window_multiple_cost",
    "test_moving_window_stats", "test_sliding_window_counter_total_reset",
    "test_expiry_acquire_entry", "test_sliding_window_counter_previous_window",
    "test_fixed_window",
}


def pytest_configure(config):
    # Marks limits' tests carry (limits' pytest.ini registers them).
    config.addinivalue_line("markers", "flaky: limits' mark of a timing-sensitive test")


#: Sync tests marked ``slow`` too: limits marks this one flaky (max_runs=3): it sleeps
#: to window edges and allows 30 ms of drift, which a loaded machine exceeds.
#: test_limits_trace.py checks the same statistics exactly, on a fake clock.
SLOW_SYNC = {"test_sliding_window_counter_previous_window"}


def pytest_collection_modifyitems(config, items):
    here = os.path.join(os.path.dirname(__file__), "aio")
    for item in items:
        slow = SLOW_ASYNC if str(item.path).startswith(here) else SLOW_SYNC
        if str(item.path).startswith(os.path.dirname(__file__)) and item.originalname in slow:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def fusedb_limits_daemon():
    """A FuseDBStorage on a daemon (one shard) started for the session, stopped at
    its end with ``fusedb stop``."""
    home = os.path.dirname(FUSEDB_PATH)
    shutil.rmtree(home, ignore_errors=True)
    try:
        yield FuseDBStorage(f"fusedb://{FUSEDB_PATH}?shards=1")
    finally:
        forget(FUSEDB_PATH)
        done = subprocess.run([sys.executable, "-m", "fusedb", "stop", FUSEDB_PATH],
                              capture_output=True, text=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)
        assert done.returncode in (0, 1), done.stderr   # 1: none was running


@pytest.fixture
def fusedb_limits_db(fusedb_limits_daemon):
    """The session's daemon, with no rate-limit key left by an earlier test."""
    fusedb_limits_daemon.reset()
    return fusedb_limits_daemon
