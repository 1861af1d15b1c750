"""String and counter commands: GET SET SETNX SETEX PSETEX GETSET GETDEL GETEX
MGET MSET MSETNX DEL UNLINK EXISTS APPEND STRLEN INCR INCRBY DECR DECRBY
INCRBYFLOAT.

Semantics and error strings are Redis 7.0.15's (src/t_string.c: the command
functions of the same names, ``parseExtendedStringArgumentsOrReply``,
``getExpireMillisecondsOrReply``; src/db.c ``delCommand``, ``existsCommand``).
Each runs on ``ctx.store`` (the database, or the transaction of EXEC or a
script); what needs an absolute expiry or several keys at once runs in
``ctx.atomic``. GET, SET and INCR without options are one engine call each.

Deviations (FuseDB's limits; the replies are ``-ERR <FuseDB's message>``):
the empty key and keys over ``max_key_size`` are refused, and so are values
over ``max_value_size`` (16 KiB by default; APPEND and INCRBYFLOAT too). MGET
and EXISTS read each key atomically, not the set of keys at one instant.
"""

from __future__ import annotations

import re
import time
import warnings

import numpy as np

from fusedb.resp.table import (INT64_MAX, INT64_MIN, SYNTAX, command, int_arg)
from fusedb.resp.types import OK, RespError

# -- SET / GETEX options (t_string.c parseExtendedStringArgumentsOrReply) ----------------

NX, XX, EX, PX, KEEPTTL, GET, EXAT, PXAT, PERSIST = (1 << i for i in range(9))
_OPTS = {b"nx": NX, b"xx": XX, b"ex": EX, b"px": PX, b"keepttl": KEEPTTL, b"get": GET,
         b"exat": EXAT, b"pxat": PXAT, b"persist": PERSIST}
_EXPIRES = EX | PX | EXAT | PXAT
#: option -> the options it cannot follow (or precede: the check is symmetric)
_CONFLICTS = {NX: XX, XX: NX, GET: 0, KEEPTTL: PERSIST | _EXPIRES,
              PERSIST: KEEPTTL | _EXPIRES, EX: KEEPTTL | PERSIST | EXAT | PX | PXAT,
              PX: KEEPTTL | PERSIST | EX | EXAT | PXAT, EXAT: KEEPTTL | PERSIST | EX | PX | PXAT,
              PXAT: KEEPTTL | PERSIST | EX | EXAT | PX}
_SET_ONLY = NX | XX | GET | KEEPTTL
_GETEX_ONLY = PERSIST


def parse_options(argv: list, first: int, is_set: bool) -> tuple[int, bytes | None]:
    """SET's options (``is_set``) or GETEX's, from ``argv[first:]``: (flags,
    the expire argument or None). RespError "syntax error" for an unknown,
    conflicting or incomplete option. A repeated option is allowed, the last
    expire wins, as in Redis."""
    flags = 0
    expire = None
    j = first
    n = len(argv)
    while j < n:
        f = _OPTS.get(argv[j].lower(), 0)
        if (not f or flags & _CONFLICTS[f] or (f & _SET_ONLY and not is_set)
                or (f & _GETEX_ONLY and is_set) or (f & _EXPIRES and j == n - 1)):
            raise RespError(SYNTAX)
        flags |= f
        if f & _EXPIRES:
            j += 1
            expire = argv[j]
        j += 1
    return flags, expire


def now_ms() -> int:
    """Redis's ``mstime()``: unix time in whole milliseconds."""
    return time.time_ns() // 1_000_000


def expire_ms(arg: bytes, seconds: bool, base_ms: int, name: bytes) -> int:
    """The expiry ``arg`` gives (t_string.c ``getExpireMillisecondsOrReply``):
    a positive integer of seconds (``seconds``) or milliseconds, plus
    ``base_ms`` (now for EX/PX, 0 for EXAT/PXAT). Returns milliseconds
    (relative if base_ms is 0 and the option is relative). RespError "invalid
    expire time in '<name>' command" for <= 0 or an overflow of 64 bits."""
    ms = int_arg(arg)
    if ms <= 0 or (seconds and ms > INT64_MAX // 1000):
        raise invalid_expire(name)
    if seconds:
        ms *= 1000
    if ms > INT64_MAX - base_ms:
        raise invalid_expire(name)
    return ms + base_ms


def ttl_arg(arg: bytes, seconds: bool, name: bytes) -> float:
    """A relative expiry (EX/PX, SETEX/PSETEX) as seconds (> 0), checked as
    :func:`expire_ms` checks it with now added."""
    ms = expire_ms(arg, seconds, 0, name)
    if ms > 1 << 62 and ms > INT64_MAX - now_ms():      # read the clock only if it matters
        raise invalid_expire(name)
    return ms / 1000


def invalid_expire(name: bytes) -> RespError:
    return RespError(b"ERR invalid expire time in '%s' command" % name.lower())


# -- GET SET and their variants ----------------------------------------------------------

@command("get", 2, "readonly fast", (1, 1, 1))
def get(ctx, argv):
    """Counts misses only: keyspace hits are GET calls plus MGET keys, less
    misses (fusedb.resp.info): one counter update per hit saved."""
    v = ctx.store.get(argv[1])
    if v is None:
        ctx.server.stats["misses"] += 1
    return v


_SKIPPED = object()


@command("set", -3, "write", (1, 1, 1))
def set_(ctx, argv):
    if len(argv) == 3:
        ctx.store.put(argv[1], argv[2])
        return OK
    flags, expire = parse_options(argv, 3, True)
    key, value = argv[1], argv[2]
    nx, xx, get_ = bool(flags & NX), bool(flags & XX), bool(flags & GET)
    if flags & (EXAT | PXAT):
        when = expire_ms(expire, bool(flags & EXAT), 0, argv[0])

        def absolute(tx):
            old = tx.entry(key)
            old = None if old is None else old[0]
            if (nx and old is not None) or (xx and old is None):
                return old if get_ else _SKIPPED
            tx.put_at(key, value, when / 1000)
            return old if get_ else OK
        r = ctx.atomic(absolute, (key,))
        return None if r is _SKIPPED else r
    ttl = None if expire is None else ttl_arg(expire, bool(flags & EX), argv[0])
    r = ctx.store.put(key, value, ttl, nx, xx, bool(flags & KEEPTTL), get_)
    if get_:
        return r
    return OK if r is not False else None


@command("setnx", 3, "write fast", (1, 1, 1))
def setnx(ctx, argv):
    return int(ctx.store.add(argv[1], argv[2]))


def _setex(ctx, argv, seconds: bool):
    ctx.store.put(argv[1], argv[3], ttl_arg(argv[2], seconds, argv[0]))
    return OK


@command("setex", 4, "write", (1, 1, 1))
def setex(ctx, argv):
    return _setex(ctx, argv, True)


@command("psetex", 4, "write", (1, 1, 1))
def psetex(ctx, argv):
    return _setex(ctx, argv, False)


@command("getset", 3, "write fast", (1, 1, 1))
def getset(ctx, argv):
    return ctx.store.put(argv[1], argv[2], None, False, False, False, True)


@command("getdel", 2, "write fast", (1, 1, 1))
def getdel(ctx, argv):
    return ctx.store.getdel(argv[1])


@command("getex", -2, "write fast", (1, 1, 1))
def getex(ctx, argv):
    flags, expire = parse_options(argv, 2, False)
    key = argv[1]
    if not flags:
        return ctx.store.get(key)

    def fn(tx):
        e = tx.entry(key)
        if e is None:
            return None
        if expire is not None:     # validated once the key is found, as Redis
            base = 0 if flags & (EXAT | PXAT) else int(tx.now * 1000)
            when = expire_ms(expire, bool(flags & (EX | EXAT)), base, argv[0])
            if when <= tx.now * 1000:
                tx.delete(key)
            else:
                tx.expire_at(key, when / 1000)
        elif e[1]:      # PERSIST of a key with a TTL
            tx.expire_at(key, 0.0)
        return e[0]
    return ctx.atomic(fn, (key,))


# -- several keys ------------------------------------------------------------------------

@command("mget", -2, "readonly fast", (1, -1, 1))
def mget(ctx, argv):
    get_ = ctx.store.get
    values = [get_(k) for k in argv[1:]]
    stats = ctx.server.stats
    stats["misses"] += values.count(None)
    stats["mget_keys"] += len(values)
    return values


def _pairs(argv):
    if len(argv) % 2 == 0:
        raise RespError(b"ERR wrong number of arguments for '%s' command" % argv[0].lower())
    return argv[1::2], argv[2::2]


@command("mset", -3, "write", (1, -1, 2))
def mset(ctx, argv):
    keys, values = _pairs(argv)
    if ctx.store is ctx.db:
        with ctx.db.batch() as b:
            for k, v in zip(keys, values):
                b.put(k, v)
    else:
        for k, v in zip(keys, values):
            ctx.store.put(k, v)
    return OK


@command("msetnx", -3, "write", (1, -1, 2))
def msetnx(ctx, argv):
    keys, values = _pairs(argv)

    def fn(tx):
        if any(k in tx for k in keys):
            return 0
        for k, v in zip(keys, values):
            tx.put(k, v)
        return 1
    return ctx.atomic(fn, keys)


@command("del", -2, "write", (1, -1, 1))
def del_(ctx, argv):
    if len(argv) == 2:
        return int(ctx.store.delete(argv[1]))
    keys = argv[1:]
    return ctx.atomic(lambda tx: sum(tx.delete(k) for k in keys), keys)


command("unlink", -2, "write fast", (1, -1, 1))(del_)


@command("exists", -2, "readonly fast", (1, -1, 1))
def exists(ctx, argv):
    store = ctx.store
    return sum(k in store for k in argv[1:])


@command("append", 3, "write fast", (1, 1, 1))
def append(ctx, argv):
    tail = argv[2]
    return len(ctx.store.update(argv[1], lambda v: tail if v is None else v + tail))


@command("strlen", 2, "readonly fast", (1, 1, 1))
def strlen(ctx, argv):
    v = ctx.store.get(argv[1])
    return 0 if v is None else len(v)


# -- counters ----------------------------------------------------------------------------

@command("incr", 2, "write fast", (1, 1, 1))
def incr(ctx, argv):
    return ctx.store.incr(argv[1], 1)


@command("decr", 2, "write fast", (1, 1, 1))
def decr(ctx, argv):
    return ctx.store.incr(argv[1], -1)


@command("incrby", 3, "write fast", (1, 1, 1))
def incrby(ctx, argv):
    return ctx.store.incr(argv[1], int_arg(argv[2]))


@command("decrby", 3, "write fast", (1, 1, 1))
def decrby(ctx, argv):
    delta = int_arg(argv[2])
    if delta == INT64_MIN:
        raise RespError("ERR decrement would overflow")
    return ctx.store.incr(argv[1], -delta)


#: what strtold parses (C99 7.20.1.3) and string2ld accepts: no space, no NaN.
_FLOAT = re.compile(rb"[+-]?(?:(?P<dec>[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                    rb"|0[xX](?P<hex>[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)"
                    rb"(?:[pP][+-]?[0-9]+)?|(?i:inf|infinity))")
_NONZERO = re.compile(rb"[1-9a-fA-F]")
MAX_LONG_DOUBLE_CHARS = 5 * 1024
_NOT_FLOAT = "ERR value is not a valid float"


def parse_long_double(s: bytes) -> np.longdouble:
    """``s`` as an x87 80-bit long double, as Redis's ``string2ld`` (util.c)
    parses it: strtold over the whole string, no leading space, no NaN, no
    overflow to infinity, no underflow to zero ("inf" itself is accepted).
    RespError "value is not a valid float" otherwise."""
    m = _FLOAT.fullmatch(s) if 0 < len(s) < MAX_LONG_DOUBLE_CHARS else None
    if m is None:
        raise RespError(_NOT_FLOAT)
    mantissa = m["dec"] or m["hex"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if m["hex"]:    # as a double: exact for up to 13 hex digits
                v = np.longdouble(float.fromhex(s.decode()))
            else:
                v = np.longdouble(s.decode())
    except OverflowError:
        raise RespError(_NOT_FLOAT) from None
    if mantissa is not None:
        if np.isinf(v):
            raise RespError(_NOT_FLOAT)      # ERANGE: overflow
        if v == 0 and _NONZERO.search(mantissa):
            raise RespError(_NOT_FLOAT)      # ERANGE: underflow to zero
    return v


def format_long_double(v: np.longdouble) -> bytes:
    """``%.17Lf`` with the trailing zeros (and point) removed and "-0" as "0":
    Redis's ``ld2string(..., LD_STR_HUMAN)`` (util.c)."""
    s = np.format_float_positional(v, precision=17, unique=False, trim="-")
    return b"0" if s == "-0" else s.encode()


@command("incrbyfloat", 3, "write fast", (1, 1, 1))
def incrbyfloat(ctx, argv):
    incr_ = parse_long_double(argv[2])

    def fn(v):
        with np.errstate(over="ignore", invalid="ignore"):
            value = (np.longdouble(0) if v is None else parse_long_double(v)) + incr_
        if not np.isfinite(value):
            raise RespError("ERR increment would produce NaN or Infinity")
        return format_long_double(value)
    return ctx.store.update(argv[1], fn)
