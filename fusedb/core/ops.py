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


def op_incr(key: bytes, delta: int, now: float, exp_new: float = 0.0, xx: bool = False):
    """``incr``: add ``delta`` to the counter (a decimal value is parsed). A key
    that is not alive counts as 0 and the new counter expires at ``exp_new``
    (0.0: never); a live key keeps its expiry. ``xx``: a key that is not alive
    stays so (result None, nothing written)."""
    def fn(e):
        if not alive(e, now):
            if xx:
                return None, None
            base, exp = 0, exp_new
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


def op_set(value: bytes, exp: float, now: float, nx: bool, xx: bool, keepttl: bool,
           get: bool):
    """``put`` with options (Redis SET NX|XX KEEPTTL GET, redis.io/commands/set):
    ``nx`` stores only if the key is not alive, ``xx`` only if it is;
    ``keepttl`` keeps a live key's expiry instead of ``exp``. The result is the
    old live value (bytes or None) with ``get``, else whether it stored (bool)
    with ``nx``/``xx``, else None."""
    def fn(e):
        live = alive(e, now)
        stores = not ((nx and live) or (xx and not live))
        if get:
            result = _live_value(e) if live else None
        elif nx or xx:
            result = stores
        else:
            result = None
        if not stores:
            return result, None
        return result, (KIND_VALUE, value, 0, e[2] if keepttl and live else exp)
    return fn


def op_getdel(now: float):
    """``getdel`` (Redis GETDEL): the live value (bytes) and the key deleted, or
    None and nothing written."""
    def fn(e):
        if not alive(e, now):
            return None, None
        return _live_value(e), (KIND_DEL, None, 0, 0.0)
    return fn


def op_getex(exp: float, now: float):
    """``getex`` (Redis GETEX EX|PERSIST): the live value (bytes), the key now
    expiring at ``exp`` (0.0: never); None and nothing written if not alive."""
    def fn(e):
        if not alive(e, now):
            return None, None
        return _live_value(e), _with_exp(e, exp)
    return fn


def op_delete(now: float):
    def fn(e):
        if not alive(e, now):
            return False, None
        return True, (KIND_DEL, None, 0, 0.0)
    return fn


def op_expire(exp: float, now: float):
    """``expire`` and ``touch``: a live key now expires at ``exp`` (0.0: never);
    the result is whether the key is alive."""
    def fn(e):
        if not alive(e, now):
            return False, None
        return True, _with_exp(e, exp)
    return fn


def _with_exp(e, exp: float) -> tuple:
    """The write that stores live entry ``e`` again, expiring at ``exp``."""
    if e[0] == KIND_INT:
        return KIND_INT, None, e[1], exp
    return KIND_VALUE, e[1], 0, exp


def _live_value(e) -> bytes:
    """A live entry's value as ``get`` shows it."""
    return e[1] if e[0] == KIND_VALUE else counter_bytes(e[1])


def op_update(fn, check_value, exp: float | None, clock):
    """``FuseDB.update``: ``fn(current value or None)`` gives the new value (stored,
    through ``check_value``, the API's value validator) or None (the key is
    deleted if it exists). ``exp``: the new absolute expiry, or None to keep the
    key's own. The result is what was stored. ``fn`` raising writes nothing;
    ``fn`` returning the very object it was given (``new is current``) with
    ``exp`` None writes nothing either (the key stays as it is)."""
    def apply(e):
        current = value_of(e, clock)
        new = fn(current)
        if new is current and exp is None:
            return current, None
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
