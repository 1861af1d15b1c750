"""Read-modify-write operations as pure functions of the key's current entry.

An entry is ``(kind, payload, exp)`` (payload: bytes, int for a counter, None for
a tombstone) or None when the key is absent. Each ``op_*`` returns a function
``entry -> (result, write)`` where ``write`` is None (nothing to store) or
``(kind, value, ivalue, exp)`` for :meth:`fusedb.shard.shard.Shard.write_locked`.
``FuseDB`` runs them under the shard lock one at a time; ``Batch`` runs several
against an overlay before writing anything, so a failing op aborts the batch.
"""

from __future__ import annotations

from fusedb.core.entry import INT64_MAX, INT64_MIN, KIND_DEL, KIND_INT, KIND_VALUE, parse_decimal
from fusedb.errors import IntegerOverflowError, NotAnIntegerError


def alive(e, now: float) -> bool:
    """Whether entry ``e`` is visible at time ``now``."""
    return e is not None and e[0] != KIND_DEL and (e[2] == 0.0 or e[2] > now)


def op_put(value: bytes, exp: float):
    return lambda e: (None, (KIND_VALUE, value, 0, exp))


def op_incr(key: bytes, delta: int, now: float):
    def fn(e):
        if not alive(e, now):
            base, exp = 0, 0.0
        elif e[0] == KIND_INT:
            base, exp = e[1], e[2]
        else:
            base, exp = parse_decimal(e[1]), e[2]
            if base is None:
                raise NotAnIntegerError(f"value of {key!r} is not a 64-bit decimal integer")
        new = base + delta
        if new < INT64_MIN or new > INT64_MAX:
            raise IntegerOverflowError(f"incr of {key!r} by {delta} overflows 64 bits")
        return new, (KIND_INT, None, new, exp)
    return fn


def op_delete(now: float):
    def fn(e):
        if not alive(e, now):
            return False, None
        return True, (KIND_DEL, None, 0, 0.0)
    return fn


def op_expire(exp: float, now: float):
    def fn(e):
        if not alive(e, now):
            return False, None
        if e[0] == KIND_INT:
            return True, (KIND_INT, None, e[1], exp)
        return True, (KIND_VALUE, e[1], 0, exp)
    return fn


def op_read(e):
    return e, None


def as_entry(write) -> tuple:
    """The entry a ``write`` tuple leaves behind."""
    kind, value, ivalue, exp = write
    return (kind, ivalue if kind == KIND_INT else value, exp)
