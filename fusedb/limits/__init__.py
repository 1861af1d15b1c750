"""The ``limits`` storage for FuseDB: ``import fusedb.limits`` registers the
storage schemes ``fusedb`` and ``async+fusedb`` with ``limits`` (>= 5), which has
no plugin discovery: defining the classes is the registration.

    import fusedb.limits
    limiter = Limiter(app, storage_uri="fusedb:///var/lib/app/limits")  # flask-limiter

Every process using the same URI shares one database (a ``fusedb serve`` daemon,
started by the first one). docs/adapters-limits.md has the URI, the options,
what each strategy stores, and the errors.
"""

from fusedb.limits._core import forget
from fusedb.limits.aio import AsyncFuseDBStorage
from fusedb.limits.storage import FuseDBStorage

__all__ = ["FuseDBStorage", "AsyncFuseDBStorage", "forget"]
