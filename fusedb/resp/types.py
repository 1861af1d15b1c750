"""The reply values every command returns, and the one error type commands raise.

A command function (fusedb.resp.commands) returns plain Python values: ``int``
(``:n``), ``bytes`` (a bulk string), ``None`` (a null: ``$-1`` or ``*-1`` in
RESP2, ``_`` in RESP3), ``list`` (an array), ``float`` (a RESP3 double, a bulk
string in RESP2), or one of the classes below. The wire encoder
(fusedb.resp.reply), EXEC's array (fusedb.resp.multi) and the Lua bridge
(fusedb.resp.scripting) all take these values, so no reply is parsed back.
Source: the RESP3 specification (github.com/redis/redis-specifications,
specifications/RESP3.md).
"""

from __future__ import annotations


class Status(bytes):
    """A simple string reply: ``+OK``. Must not contain CR or LF."""

    __slots__ = ()


class Err(bytes):
    """An error reply, whole: its first word is the code (``ERR``, ``WRONGTYPE``,
    ``NOAUTH``, ...), as in ``-ERR syntax error``. Must not contain CR or LF."""

    __slots__ = ()


class Map(dict):
    """A map reply: RESP3 ``%n`` (key, value pairs), a flat array in RESP2."""

    __slots__ = ()


class Verbatim(bytes):
    """A verbatim string (INFO): RESP3 ``=n\\r\\ntxt:...``, a bulk string in RESP2."""

    __slots__ = ()


class RespError(Exception):
    """Raised by a command for a Redis error reply. ``reply`` is the whole
    error (:class:`Err`), e.g. ``RespError("ERR syntax error")``."""

    def __init__(self, message: str | bytes):
        if isinstance(message, str):
            message = message.encode()
        super().__init__(message.decode("utf-8", "replace"))
        self.reply = Err(message.replace(b"\r", b" ").replace(b"\n", b" "))


OK = Status(b"OK")
QUEUED = Status(b"QUEUED")
