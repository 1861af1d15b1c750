"""Expiry and keyspace commands: EXPIRE PEXPIRE EXPIREAT PEXPIREAT (NX XX GT LT)
TTL PTTL EXPIRETIME PEXPIRETIME PERSIST TYPE RENAME RENAMENX SCAN KEYS DBSIZE
FLUSHDB FLUSHALL.

Semantics and error strings are Redis 7.0.15's (src/expire.c
``expireGenericCommand``, ``parseExtendedExpireArgumentsOrReply``,
``ttlGenericCommand``, ``persistCommand``; src/db.c ``renameGenericCommand``,
``scanGenericCommand``, ``keysCommand``, ``flushdbCommand``; src/util.c
``stringmatchlen`` for the glob patterns, ported in fusedb.resp.glob).
Expiries are absolute unix milliseconds in Redis and absolute float seconds
in FuseDB (0.24 us resolution at today's dates: milliseconds round-trip).

Keys starting with ``\\xff\\xff`` are the server's (the shared script
store): KEYS, SCAN, DBSIZE and FLUSHDB skip them.

Deviations: SCAN's cursor is stateless, ``0`` or the decimal of
``int.from_bytes(b"\\x01" + last_key)``, so it works on any server process
and survives leaf splits; keys come in key order, each at most once per full
scan while it stays unchanged. It is a big number, not a 64-bit one (redis-py
takes it; clients parsing a uint64 cursor do not). A last key longer than
1700 bytes is cut to 1700 (marker 2: resume at that prefix, inclusive), so
keys past it may repeat. FLUSHDB/FLUSHALL delete in batches: not atomic
against concurrent writers. DBSIZE counts live keys by a scan, O(keys) (Redis
also counts keys that expired and were not reclaimed yet).
"""

from __future__ import annotations

import bisect

from fusedb.api.scan import prefix_end
from fusedb.resp.table import INT64_MAX, INT64_MIN, SYNTAX, command, int_arg
from fusedb.resp.glob import literal_prefix, stringmatch
from fusedb.resp.strings import now_ms
from fusedb.resp.types import OK, RespError, Status

#: the server's own keys start here (the shared script store)
RESERVED = b"\xff\xff"

# -- EXPIRE family -----------------------------------------------------------------------

_NX, _XX, _GT, _LT = 1, 2, 4, 8
_EXPIRE_OPTS = {b"nx": _NX, b"xx": _XX, b"gt": _GT, b"lt": _LT}


def _expire_flags(argv: list) -> int:
    flags = 0
    for opt in argv[3:]:
        f = _EXPIRE_OPTS.get(opt.lower())
        if f is None:
            raise RespError(b"ERR Unsupported option " + opt.split(b"\0", 1)[0])
        flags |= f
    if flags & _NX and flags & (_XX | _GT | _LT):
        raise RespError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if flags & _GT and flags & _LT:
        raise RespError("ERR GT and LT options at the same time are not compatible")
    return flags


def _expire(ctx, argv, seconds: bool, absolute: bool):
    flags = _expire_flags(argv)
    when = int_arg(argv[2])
    err = RespError(b"ERR invalid expire time in '%s' command" % argv[0].lower())
    if seconds:
        if not INT64_MIN // 1000 < when <= INT64_MAX // 1000:
            raise err
        when *= 1000
    base = 0 if absolute else now_ms()
    if when > INT64_MAX - base:
        raise err
    key = argv[1]
    if not flags and not absolute:      # the common case: one engine call
        if when > 0:
            return int(ctx.store.expire(key, when / 1000))
        return int(ctx.store.delete(key))

    def fn(tx):
        e = tx.entry(key)
        if e is None:
            return 0
        at = when if absolute else when + int(tx.now * 1000)
        cur = round(e[1] * 1000) if e[1] else -1
        if ((flags & _NX and cur != -1) or (flags & _XX and cur == -1)
                or (flags & _GT and (at <= cur or cur == -1))
                or (flags & _LT and cur != -1 and at >= cur)):
            return 0
        if at <= tx.now * 1000:
            tx.delete(key)
        else:
            tx.expire_at(key, at / 1000)
        return 1
    return ctx.atomic(fn, (key,))


@command("expire", -3, "write fast", (1, 1, 1))
def expire(ctx, argv):
    return _expire(ctx, argv, True, False)


@command("pexpire", -3, "write fast", (1, 1, 1))
def pexpire(ctx, argv):
    return _expire(ctx, argv, False, False)


@command("expireat", -3, "write fast", (1, 1, 1))
def expireat(ctx, argv):
    return _expire(ctx, argv, True, True)


@command("pexpireat", -3, "write fast", (1, 1, 1))
def pexpireat(ctx, argv):
    return _expire(ctx, argv, False, True)


def _pttl(ctx, key) -> int:
    t = ctx.store.ttl(key)
    if t < 0:
        return int(t)       # -1 no TTL, -2 missing
    return max(0, round(t * 1000))


@command("ttl", 2, "readonly fast", (1, 1, 1))
def ttl(ctx, argv):
    ms = _pttl(ctx, argv[1])
    return ms if ms < 0 else (ms + 500) // 1000


@command("pttl", 2, "readonly fast", (1, 1, 1))
def pttl(ctx, argv):
    return _pttl(ctx, argv[1])


def _expiretime(ctx, key) -> int:
    e = ctx.atomic(lambda tx: tx.entry(key), (key,))
    if e is None:
        return -2
    return round(e[1] * 1000) if e[1] else -1


@command("expiretime", 2, "readonly fast", (1, 1, 1))
def expiretime(ctx, argv):
    ms = _expiretime(ctx, argv[1])
    return ms if ms < 0 else (ms + 500) // 1000


@command("pexpiretime", 2, "readonly fast", (1, 1, 1))
def pexpiretime(ctx, argv):
    return _expiretime(ctx, argv[1])


@command("persist", 2, "write fast", (1, 1, 1))
def persist(ctx, argv):
    key = argv[1]

    def fn(tx):
        e = tx.entry(key)
        if e is None or not e[1]:
            return 0
        tx.expire_at(key, 0.0)
        return 1
    return ctx.atomic(fn, (key,))


@command("type", 2, "readonly fast", (1, 1, 1))
def type_(ctx, argv):
    return Status(b"string" if argv[1] in ctx.store else b"none")


def _rename(ctx, argv, nx: bool):
    src, dst = argv[1], argv[2]

    def fn(tx):
        e = tx.entry(src)
        if e is None:
            raise RespError("ERR no such key")
        if src == dst:
            return 0 if nx else OK
        if nx and dst in tx:
            return 0
        tx.put_at(dst, e[0], e[1])
        tx.delete(src)
        return 1 if nx else OK
    return ctx.atomic(fn, (src, dst))


@command("rename", 3, "write", (1, 2, 1))
def rename(ctx, argv):
    return _rename(ctx, argv, False)


@command("renamenx", 3, "write fast", (1, 2, 1))
def renamenx(ctx, argv):
    return _rename(ctx, argv, True)


# -- keyspace ----------------------------------------------------------------------------

def key_range(ctx, start: bytes | None, stop: bytes | None, limit: int | None) -> list:
    """Up to ``limit`` live keys ``start <= key < stop`` (None: unbounded),
    in key order, never a reserved key: from a scan of the database, or,
    inside EXEC or a script, of the transaction (every shard locked)."""
    if stop is None or stop > RESERVED:
        stop = RESERVED
    if start is not None and start >= stop:
        return []
    if ctx.store is ctx.db:
        return [k for k, _ in ctx.db.scan(start or None, stop, limit=limit)]
    keys = ctx.store.keys()
    i = bisect.bisect_left(keys, start) if start else 0
    j = bisect.bisect_left(keys, stop)
    return keys[i:j if limit is None else min(j, i + limit)]


_CUT = 1700     # longest key a cursor holds whole (int -> str limit: 4300 digits)


def encode_cursor(last: bytes) -> bytes:
    """The cursor resuming after key ``last`` (see the module doc)."""
    if len(last) > _CUT:
        return str(int.from_bytes(b"\x02" + last[:_CUT], "big")).encode()
    return str(int.from_bytes(b"\x01" + last, "big")).encode()


def decode_cursor(arg: bytes) -> bytes | None:
    """Where a scan resumes (inclusive) for cursor ``arg``; None for 0 (the
    start). RespError "invalid cursor" for anything not made by
    :func:`encode_cursor`."""
    digits = arg[1:] if arg[:1] == b"+" else arg
    if digits and not digits.isdigit():
        raise RespError("ERR invalid cursor")
    try:
        n = int(digits or b"0")
    except ValueError:      # over Python's int -> str digit limit
        raise RespError("ERR invalid cursor") from None
    if n == 0:
        return None
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if raw[0] == 1:
        return raw[1:] + b"\0"
    if raw[0] == 2:
        return raw[1:]
    raise RespError("ERR invalid cursor")


@command("scan", -2, "readonly", (0, 0, 0))
def scan(ctx, argv):
    start = decode_cursor(argv[1])
    count, pattern, type_name = 10, None, None
    i, n = 2, len(argv)
    while i < n:
        opt = argv[i].lower()
        if opt == b"count" and i + 1 < n:
            count = int_arg(argv[i + 1])
            if count < 1:
                raise RespError(SYNTAX)
        elif opt == b"match" and i + 1 < n:
            pattern = None if argv[i + 1] == b"*" else argv[i + 1]
        elif opt == b"type" and i + 1 < n:
            type_name = argv[i + 1].lower()
        else:
            raise RespError(SYNTAX)
        i += 2
    stop = None
    if pattern is not None:
        prefix = literal_prefix(pattern)
        if prefix:
            stop = prefix_end(prefix)
            start = max(start or b"", prefix)
    keys = key_range(ctx, start, stop, count)
    cursor = encode_cursor(keys[-1]) if len(keys) == count else b"0"
    if type_name is not None and type_name != b"string":
        keys = []
    elif pattern is not None:
        keys = [k for k in keys if stringmatch(pattern, k)]
    return [cursor, keys]


def matching_keys(ctx, pattern: bytes) -> list:
    """Every live key matching the glob ``pattern``, in key order (reading
    only the range of the pattern's literal prefix)."""
    prefix = literal_prefix(pattern)
    keys = key_range(ctx, prefix or None, prefix_end(prefix) if prefix else None, None)
    if pattern == prefix + b"*":
        return keys
    return [k for k in keys if stringmatch(pattern, k)]


@command("keys", 2, "readonly", (0, 0, 0))
def keys_(ctx, argv):
    return matching_keys(ctx, argv[1])


@command("dbsize", 1, "readonly fast", (0, 0, 0))
def dbsize(ctx, argv):
    return len(key_range(ctx, None, None, None))


FLUSH_CHUNK = 256       # keys deleted per batch (a batch must fit one WAL record)


def flush_all(ctx) -> None:
    """Delete every key but the reserved ones, in batches of FLUSH_CHUNK
    (inside EXEC or a script: in its transaction)."""
    if ctx.store is not ctx.db:
        for k in key_range(ctx, None, None, None):
            ctx.store.delete(k)
        return
    start = None
    while True:
        chunk = key_range(ctx, start, None, FLUSH_CHUNK)
        if not chunk:
            return
        with ctx.db.batch() as b:
            for k in chunk:
                b.delete(k)
        start = chunk[-1] + b"\0"


def _flush(ctx, argv):
    if len(argv) == 2 and argv[1].lower() in (b"sync", b"async") or len(argv) == 1:
        flush_all(ctx)
        return OK
    raise RespError(SYNTAX)


@command("flushdb", -1, "write", (0, 0, 0))
def flushdb(ctx, argv):
    return _flush(ctx, argv)


@command("flushall", -1, "write", (0, 0, 0))
def flushall(ctx, argv):
    return _flush(ctx, argv)
