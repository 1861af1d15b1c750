"""Test support, importable as one module: ``from fusedb import testing``.

* ``testing.model``: the one dict model of the API contract (``Model``), the
  fake clock, small option sets, ``outcome``.
* ``testing.internals``: every helper that needs FuseDB's internals (locks,
  routes, segments, the WAL ring, crash and power-cut simulation). Tests never
  touch a private attribute of a handle (``db._store``, ``db._shards``, ...) nor
  a layout constant: they call a named function there. When internals move,
  that module (and ``leaks.fusedb_shm``) is the one place to re-point; its
  ``INTERNALS`` lists what it reaches.
* ``testing.leaks``: the leak checks of tests/conftest.py.

Nothing here is used by FuseDB itself; it is imported by tests (in the test
process and in the child processes tests start).
"""

from fusedb.testing.internals import *  # noqa: F401,F403 - the one namespace tests use
from fusedb.testing.leaks import *  # noqa: F401,F403
from fusedb.testing.model import *  # noqa: F401,F403
