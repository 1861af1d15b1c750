"""Reply encoding: a reply value (fusedb.resp.types) -> the bytes on the wire.

RESP2 and RESP3 as Redis 7.0.15 writes them (src/networking.c: addReplyNull,
addReplyDouble, addReplyVerbatim, addReplyMapLen; the RESP3 specification,
github.com/redis/redis-specifications, specifications/RESP3.md):

====================  ===========================  ==============================
value                 RESP2                        RESP3
====================  ===========================  ==============================
int (bool: 1/0)       ``:n``                       ``:n``
bytes                 ``$len`` bulk                ``$len`` bulk
None                  ``$-1``                      ``_``
list / tuple          ``*n`` items                 ``*n`` items
float                 bulk of ``%.17g``            ``,%.17g`` (``inf``, ``-inf``)
Status                ``+text``                    ``+text``
Err                   ``-CODE text``               ``-CODE text``
Map                   ``*2n`` flat key, value      ``%n`` key, value
Verbatim              bulk                         ``=len`` ``txt:`` text
====================  ===========================  ==============================

Never attributes (``|``) nor pushes (``>``). The constants below are the
replies the hot commands send, built once.
"""

from __future__ import annotations

from fusedb.resp.types import Err, Map, Status, Verbatim

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
QUEUED = b"+QUEUED\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"
NULL = (None, None, b"$-1\r\n", b"_\r\n")     # NULL[resp]
CRLF = b"\r\n"


def bulk(b: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(b), b)


def error(message: bytes) -> bytes:
    """``-message\\r\\n`` (``message`` whole, with its code: b"ERR syntax error")."""
    return b"-%b\r\n" % message


def _double(d: float, resp: int) -> bytes:
    if d != d or d in (float("inf"), float("-inf")):
        text = b"nan" if d != d else (b"inf" if d > 0 else b"-inf")
    else:
        text = b"%.17g" % d
    return b",%b\r\n" % text if resp == 3 else bulk(text)


def encode(value, resp: int) -> bytes:
    """The wire bytes of the reply ``value`` for a connection speaking RESP
    ``resp`` (2 or 3). Raises TypeError for a value that is no reply value."""
    cls = value.__class__
    if cls is bytes:
        return b"$%d\r\n%b\r\n" % (len(value), value)
    if cls is int:
        return b":%d\r\n" % value
    if value is None:
        return NULL[resp]
    if cls is Status:
        return b"+%b\r\n" % value
    if cls is Err:
        return b"-%b\r\n" % value
    if cls is list or cls is tuple:
        parts = [b"*%d\r\n" % len(value)]
        parts += [encode(v, resp) for v in value]
        return b"".join(parts)
    if cls is Map:
        if resp == 3:
            parts = [b"%%%d\r\n" % len(value)]
        else:
            parts = [b"*%d\r\n" % (2 * len(value))]
        for k, v in value.items():
            parts.append(encode(k, resp))
            parts.append(encode(v, resp))
        return b"".join(parts)
    if cls is Verbatim:
        if resp == 3:
            return b"=%d\r\ntxt:%b\r\n" % (len(value) + 4, value)
        return bulk(value)
    if cls is float:
        return _double(value, resp)
    if cls is bool:
        return ONE if value else ZERO
    if isinstance(value, (bytes, bytearray, memoryview)):   # a subclass of bytes
        return bulk(bytes(value))
    raise TypeError(f"not a reply value: {value!r}")
