"""Entries and the read-modify-write operations on them, as pure functions.

An entry is ``(kind, payload, exp)`` (payload: bytes for a value, int for a
counter, None for a tombstone; exp: absolute expiry, 0.0 = never) or None when
the key is absent. :func:`entry_at` is the one decoder of a row of a buffer slab
or a segment into an entry; :func:`value_of` is what ``get`` shows of one.

Each ``op_*`` returns a function ``entry -> (result, write)`` where ``write`` is
None (nothing to store) or ``(kind, value, ivalue, exp)`` for
:meth:`fusedb.shard.shard.Shard.write_locked`. The executor
(fusedb.api.executor) runs one under the key's shard lock; ``Batch`` runs
several against an overlay before writing anything, so a failing op aborts the
batch.
"""

from __future__ import annotations

from fusedb.core.entry import INT64_MAX, INT64_MIN, KIND_DEL, KIND_INT, KIND_VALUE, parse_decimal
from fusedb.errors import IntegerOverflowError, NotAnIntegerError


def entry_at(table, i: int):
    """The entry in row ``i`` of ``table``: a buffer slab or a segment (anything
    with ``kind`` and ``exp`` columns and ``value(i)``, ``int_value(i)``)."""
    kind = table.kind[i]
    if kind == KIND_INT:
        return kind, table.int_value(i), table.exp[i]
    if kind == KIND_DEL:
        return kind, None, 0.0
    return kind, table.value(i), table.exp[i]


def counter_bytes(n: int) -> bytes:
    """A counter as ``get`` reads it: its ASCII decimal."""
    return b"%d" % n


def alive(e, now: float) -> bool:
    """Whether entry ``e`` is visible at time ``now``."""
    return e is not None and e[0] != KIND_DEL and (e[2] == 0.0 or e[2] > now)


def value_of(e, clock) -> bytes | None:
    """What ``get`` returns for entry ``e``: the value's bytes (a counter as its
    ASCII decimal), or None if it is absent, deleted, or expired by ``clock()``
    (called only for an entry with an expiry)."""
    if e is None:
        return None
    kind, payload, exp = e
    if kind == KIND_DEL or (exp != 0.0 and exp <= clock()):
        return None
    return payload if kind == KIND_VALUE else counter_bytes(payload)


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


def op_update(fn, check_value, exp: float | None, clock):
    """``FuseDB.update``: ``fn(current value or None)`` gives the new value (stored,
    through ``check_value``, the API's value validator) or None (the key is
    deleted if it exists). ``exp``: the new absolute expiry, or None to keep the
    key's own. The result is what was stored. ``fn`` raising writes nothing."""
    def apply(e):
        current = value_of(e, clock)
        new = fn(current)
        if new is None:
            return None, (None if current is None else (KIND_DEL, None, 0, 0.0))
        new = check_value(new)
        if exp is not None:
            return new, (KIND_VALUE, new, 0, exp)
        return new, (KIND_VALUE, new, 0, 0.0 if current is None else e[2])
    return apply


def op_read(e):
    return e, None


def as_entry(write) -> tuple:
    """The entry a ``write`` tuple leaves behind."""
    kind, value, ivalue, exp = write
    return (kind, ivalue if kind == KIND_INT else value, exp)


def logical_bytes(key: bytes, kind: int, value: bytes | None) -> int:
    """Bytes a write adds to the ``logical_bytes_written`` statistic."""
    return len(key) + (len(value) if value is not None else 8 if kind == KIND_INT else 0)
