"""FuseDB: an embedded key-value engine for small, hot, mutable state.

    import fusedb
    with fusedb.open("state/") as db:
        db.put(b"user:1", b"...", ttl=30)
        db.incr(b"hits:/login")

See README.md for the API and docs/design.md for how it works.

``fusedb.compiled`` is True when this process runs the compiled kernel, False when
it runs the pure-Python path; ``fusedb.kernel_reason`` then says why ("" when
compiled). Chosen at import from FUSEDB_NO_EXTENSIONS / FUSEDB_REQUIRE_EXTENSIONS:
fusedb.core.kernel.
"""

from fusedb.api.batch import Batch
from fusedb.api.db import TTL_MISSING, TTL_NONE, FuseDB, connect, open
from fusedb.core.kernel import COMPILED as compiled
from fusedb.core.kernel import REASON as kernel_reason
from fusedb.errors import (ClosedError, CorruptionError, DiskError, ForkedError, FuseDBError,
                     FuseDBKeyError, IntegerOverflowError, InvalidArgumentError,
                     KeyTooLargeError, KeyTypeError, LockedError, LockTimeoutError,
                     NotADatabaseError, NotAnIntegerError, NotRunningError,
                     PermissionDeniedError, SharedMemoryError, UnknownOptionError,
                     ValueTooLargeError, ValueTypeError, WriteStallError)
from fusedb.options import Options

__version__ = "0.1.0"

__all__ = [
    "open", "connect", "FuseDB", "Batch", "Options", "TTL_NONE", "TTL_MISSING",
    "FuseDBError", "ClosedError", "CorruptionError", "DiskError", "FuseDBKeyError",
    "IntegerOverflowError",
    "InvalidArgumentError", "KeyTooLargeError", "KeyTypeError", "LockedError",
    "NotAnIntegerError", "ValueTooLargeError", "ValueTypeError", "WriteStallError",
    "ForkedError", "LockTimeoutError", "NotRunningError", "NotADatabaseError",
    "SharedMemoryError", "PermissionDeniedError", "UnknownOptionError", "compiled",
    "kernel_reason",
]
