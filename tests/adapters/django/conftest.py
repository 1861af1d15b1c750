"""Django without a project and without pytest-django: the settings are configured
here, once, for the tests in this folder only (no other test file imports Django).

Every test here shares one FuseDB database, served by one daemon that the first
cache operation starts (``connect(start=True)``, as in production). Its directory
is made outside pytest's base temp directory, because the per-test leak guard
(tests/conftest.py) kills daemons of databases under it; the session fixture
below stops the daemon at the end and runs the same leak check on that directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest
from django.conf import settings
from django.test.utils import setup_test_environment

import fusedb.django
from fusedb.testing import assert_no_leaks, fusedb_shm

from adapters.django import djangoconf

if not settings.configured:
    # Named, not made: the daemon makes it on first use (nothing is left in /tmp
    # when no test of this folder runs).
    djangoconf.configure(os.path.join(os.path.realpath(tempfile.gettempdir()),
                                      f"fusedb-django-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                                      "db"))
    setup_test_environment()    # as Django's test runner does (ALLOWED_HOSTS "testserver", ...)


def stop_daemon(location: str) -> None:
    """Detach this process, then ``fusedb stop`` the daemon (if one runs)."""
    fusedb.django.forget(location)
    done = subprocess.run([sys.executable, "-m", "fusedb", "stop", location],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr      # 1: none was running


@pytest.fixture(scope="session", autouse=True)
def django_daemon():
    """Yields the database path; stops its daemon at the end and checks that
    nothing of it is left (processes, shared memory)."""
    location = djangoconf.location()
    base = os.path.dirname(location)
    shm_before = fusedb_shm(base)
    try:
        yield location
    finally:
        stop_daemon(location)
        assert_no_leaks(base, shm_before)
        shutil.rmtree(base, ignore_errors=True)
