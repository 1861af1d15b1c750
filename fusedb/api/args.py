"""Validation of API arguments: keys, values, TTLs, counter deltas, paths.

One rule for each, shared by :class:`fusedb.api.db.FuseDB`, ``Batch``,
transactions and scans. Pure functions of the argument and the database's
limits; no lock, no I/O.

Bytes-like, for values and keys alike, means any object with the buffer
protocol (bytes, bytearray, memoryview, array.array, mmap, a numpy array or
scalar, ctypes arrays), taken as the bytes ``memoryview(obj).tobytes()``
returns: every element's raw bytes in row-major (C) order, so a non-contiguous
or Fortran-ordered numpy array is copied as ``arr.tobytes()`` would and
``np.frombuffer(db[k], arr.dtype).reshape(arr.shape)`` gives it back. A buffer
of Python objects (numpy's object dtype, format ``O``) holds pointers, not
data: refused. A key may also be a str (UTF-8 encoded); a value may not (encode
it: a str value is more often a mistake than a choice of encoding).
"""

from __future__ import annotations

import math
import os
import re

from fusedb.core.entry import INT64_MAX, INT64_MIN
from fusedb.errors import IntegerOverflowError, InvalidArgumentError, KeyTooLargeError, \
    KeyTypeError, ValueTooLargeError, ValueTypeError


#: A struct-module format's field names (``T{<d:x:}``), which are not type codes.
_FIELD_NAMES = re.compile(r":[^:]*:")


def as_bytes(obj, max_value_size: int | None = None) -> bytes | None:
    """The bytes of a bytes-like ``obj`` (module docstring), or None if it is
    not bytes-like: it has no buffer protocol, or it is a buffer of Python
    objects (type code ``O``). With ``max_value_size``: ValueTooLargeError for
    a buffer of more bytes, raised before they are copied. Holds no buffer of
    ``obj`` on return (an mmap stays resizable)."""
    try:
        view = memoryview(obj)
    except TypeError:
        return None
    try:
        fmt = view.format
        if "O" in fmt and "O" in _FIELD_NAMES.sub("", fmt):
            return None
        if max_value_size is not None and view.nbytes > max_value_size:
            raise too_large(view.nbytes, max_value_size)
        return view.tobytes()
    finally:
        view.release()


def too_large(n: int, max_value_size: int) -> ValueTooLargeError:
    """The error for a value of ``n`` bytes."""
    return ValueTooLargeError(f"value length {n} is over max_value_size={max_value_size}")


def coerce_key(key, what: str | None = None) -> bytes:
    """``key`` as bytes: a str UTF-8 encoded, a bytes-like its bytes (module
    docstring). KeyTypeError for any other type; ``what`` names the argument in
    the message (default: "keys")."""
    if isinstance(key, str):
        return key.encode("utf-8")
    data = as_bytes(key)
    if data is None:
        raise KeyTypeError(f"{what or 'keys'} must be bytes-like (bytes, bytearray, "
                           f"memoryview, a numpy array: any buffer) or str, "
                           f"not {type(key).__name__}")
    return data


def db_path(path) -> str:
    """A database directory ``path`` as a str: a str as is, bytes decoded with
    the file system encoding, an os.PathLike (pathlib.Path) by ``os.fspath``.
    InvalidArgumentError for any other type."""
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise InvalidArgumentError(f"a database path is a str, bytes or os.PathLike "
                                   f"(pathlib.Path), not {type(path).__name__}") from None


def delta(d, op: str = "incr") -> int:
    """A counter delta: an int in the signed 64-bit range. ValueTypeError,
    IntegerOverflowError otherwise (``op`` names the operation)."""
    if type(d) is not int:
        raise ValueTypeError(f"{op} delta must be an int, not {type(d).__name__}")
    if d < INT64_MIN or d > INT64_MAX:
        raise IntegerOverflowError(f"{op} delta {d} does not fit in 64 bits")
    return d


def callback(fn):
    """``fn`` if it is callable, else InvalidArgumentError (``update()``'s fn)."""
    if not callable(fn):
        raise InvalidArgumentError(f"update() takes a function of the current value, "
                                   f"not {type(fn).__name__}")
    return fn


def _flags(**flags) -> None:
    for name, flag in flags.items():
        if type(flag) is not bool:
            raise ValueTypeError(f"{name} is a bool, not {type(flag).__name__}")


def put_options(ttl, nx: bool, xx: bool, keepttl: bool, get: bool) -> None:
    """``put``'s options together: ValueTypeError for one that is not a bool,
    InvalidArgumentError for ``nx`` with ``xx`` and for ``keepttl`` with a
    ``ttl`` (Redis refuses both combinations of SET: redis.io/commands/set)."""
    _flags(nx=nx, xx=xx, keepttl=keepttl, get=get)
    if nx and xx:
        raise InvalidArgumentError("put takes nx or xx, not both")
    if keepttl and ttl is not None:
        raise InvalidArgumentError("put takes keepttl or a ttl, not both")


def incr_options(ttl, xx: bool) -> None:
    """``incr``'s ``xx`` with its ``ttl``: ValueTypeError if ``xx`` is not a
    bool, InvalidArgumentError for both (xx never creates the key, so the TTL
    could never apply)."""
    _flags(xx=xx)
    if xx and ttl is not None:
        raise InvalidArgumentError("incr takes xx or a ttl, not both: with xx it never "
                                   "creates the key, and a ttl applies only to a key it creates")


def ttl_seconds(ttl) -> float:
    """``ttl``: seconds, a positive finite int or float. ValueTypeError for
    another type (bool included), InvalidArgumentError for a bad number."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise ValueTypeError(f"ttl is seconds (int or float), not {type(ttl).__name__}")
    if not (ttl > 0 and math.isfinite(ttl)):
        raise InvalidArgumentError(f"ttl must be a positive finite number, got {ttl!r}")
    return ttl


class Args:
    """The validators bound to one database's limits (max_key_size,
    max_value_size, clock). Stateless after construction: any thread."""

    def __init__(self, opts):
        self.max_key = opts.max_key_size
        self.max_value = opts.max_value_size
        self.clock = opts.clock

    def key(self, key) -> bytes:
        """``key`` as bytes, 1..max_key_size long. KeyTypeError, KeyTooLargeError."""
        if type(key) is not bytes:
            key = coerce_key(key)
        n = len(key)
        if n == 0 or n > self.max_key:
            raise KeyTooLargeError(f"key length {n} is outside 1..{self.max_key} bytes")
        return key

    def value(self, value) -> bytes:
        """``value`` (bytes-like: module docstring) as bytes, at most
        max_value_size long. ValueTypeError, ValueTooLargeError (checked before
        a buffer is copied)."""
        if type(value) is not bytes:
            data = as_bytes(value, self.max_value)
            if data is None:
                hint = " (encode a str: value.encode())" if isinstance(value, str) else ""
                raise ValueTypeError(f"values are bytes-like (bytes, bytearray, memoryview, a "
                                     f"numpy array: any buffer), not {type(value).__name__}{hint}")
            return data
        if len(value) > self.max_value:
            raise too_large(len(value), self.max_value)
        return value

    def deadline(self, ttl) -> float:
        """The absolute expiry (clock seconds) of a ``ttl`` from now; 0.0 (never)
        for None. Errors as :func:`ttl_seconds`."""
        if ttl is None:
            return 0.0
        return self.clock() + ttl_seconds(ttl)
