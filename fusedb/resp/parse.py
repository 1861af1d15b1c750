"""Request parsing: the bytes a client sends -> commands (lists of bytes).

Redis 7.0.15's rules (src/networking.c ``processInputBuffer``,
``processInlineBuffer``, ``processMultibulkBuffer``; src/sds.c
``sdssplitargs``; src/util.c ``string2ll``), with its exact protocol-error
replies: a request starting with ``*`` is a multibulk array of bulk strings;
anything else is an inline command, one line split like a shell (quotes,
``\\xHH`` escapes). ``*0``, ``*-1`` and empty lines are skipped. An error
ends the connection after its reply (the commands before it have run).

Two parsers, one result. :class:`PureParser` is the reference: incremental,
every rule and error of Redis. ``hiredis.Reader`` (where installed) parses
request arrays 5-10x faster; :class:`RequestReader` feeds it whole chunks
that start at a request boundary and hands the rest of a chunk to the pure
parser, from the exact byte where hiredis stopped, whenever hiredis sees
anything but complete arrays of bulk strings (a partial request, an inline
command, a malformed frame: the pure parser then gives Redis's reply). The
environment variable ``FUSEDB_RESP_PURE=1`` turns hiredis off.

Memory per connection is bounded: a bulk longer than ``max_bulk`` (Redis's
proto-max-bulk-len, at most the query limit) is refused at its header
("invalid bulk length", so a 2^40-byte bulk is refused before any of it is
read); the bytes held for one unfinished request (buffer and the arguments
read so far) above ``query_limit`` close the connection without a reply
(Redis: client-query-buffer-limit). Before AUTH (when a password is set)
a request may have at most 10 arguments of at most 16384 bytes (Redis's
"unauthenticated" limits).
"""

from __future__ import annotations

import os
import re

from fusedb.core import kernel
from fusedb.core.entry import parse_decimal

try:
    import hiredis
except ImportError:          # the server extra is not installed: the pure parser only
    hiredis = None

#: hiredis is used (module doc); tests run both ways.
HIREDIS = hiredis is not None and os.environ.get("FUSEDB_RESP_PURE", "") in ("", "0")

INLINE_MAX = 64 * 1024          # PROTO_INLINE_MAX_SIZE (server.h)
INT_MAX = 2**31 - 1
MAX_BULK = 512 * 1024 * 1024    # proto-max-bulk-len's default (config.c)
QUERY_LIMIT = 64 * 1024 * 1024  # bytes held for one request (Redis: 1 GiB by default)
UNAUTH_ARGS = 10                # networking.c: "unauthenticated multibulk length"
UNAUTH_BULK = 16384             # networking.c: "unauthenticated bulk length"
ARG_OVERHEAD = 48               # bytes a held argument costs besides its data


class ProtocolError(Exception):
    """The request stream is broken: ``reply`` (the whole error line, with
    CRLF) is written, or nothing when it is None, then the connection closes."""

    def __init__(self, message: str | bytes | None):
        if isinstance(message, str):
            message = message.encode()
        super().__init__(message.decode("latin-1") if message else
                         "client query buffer limit reached")
        # addReplyErrorFormat turns CR and LF into spaces (networking.c)
        self.reply = None if message is None else b"-ERR Protocol error: %s\r\n" % (
            message.replace(b"\r", b" ").replace(b"\n", b" "))


# -- inline commands (sdssplitargs) ---------------------------------------------------

_SPACE = b" \t\n\r\v\f"        # C isspace() in the C locale
_HEX = b"0123456789abcdefABCDEF"
_ESC = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}


def split_inline(line: bytes) -> list | None:
    """``line`` split as Redis's ``sdssplitargs`` does (src/sds.c): blanks
    separate arguments; "double quotes" take ``\\xHH`` and ``\\n \\r \\t \\b
    \\a`` escapes (``\\`` before anything else is that character); 'single
    quotes' take ``\\'`` only; a closing quote must be followed by a blank or
    the end. Returns None for unbalanced quotes."""
    if b'"' not in line and b"'" not in line and b"\x0b" not in line and b"\x0c" not in line:
        return line.split()        # splits at exactly the blanks sdssplitargs does then
    args: list = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        inq = insq = False
        while True:
            c = line[i] if i < n else None
            if inq:
                if c is None:
                    return None
                if c == 92 and i + 3 < n and line[i + 1] == 120 and \
                        line[i + 2] in _HEX and line[i + 3] in _HEX:
                    cur.append(int(line[i + 2:i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    cur += _ESC.get(line[i], line[i:i + 1])
                elif c == 34:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                else:
                    cur.append(c)
            elif insq:
                if c is None:
                    return None
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    cur.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                else:
                    cur.append(c)
            else:
                if c is None or c in b" \n\r\t":
                    break
                if c == 34:
                    inq = True
                elif c == 39:
                    insq = True
                else:
                    cur.append(c)
            i += 1
        args.append(bytes(cur))


def _c_string_end(buf: bytearray, pos: int) -> int:
    """Where Redis's strchr() over the query buffer from ``pos`` stops: the
    first NUL byte (a line with a NUL in it never ends, until the 64 KiB
    limit)."""
    nul = buf.find(b"\0", pos)
    return len(buf) if nul < 0 else nul


# -- the pure parser ------------------------------------------------------------------

class PureParser:
    """Incremental parser of one connection's request stream (Redis's state
    machine: a multibulk in progress keeps its count, its arguments so far and
    the pending bulk's length). :meth:`feed` bytes, then call :meth:`next`
    until it returns None (more bytes needed)."""

    __slots__ = ("buf", "pos", "left", "bulk", "args", "held", "max_bulk", "limit")

    def __init__(self, query_limit: int = QUERY_LIMIT, max_bulk: int = MAX_BULK):
        self.buf = bytearray()
        self.pos = 0
        self.left = 0            # arguments still to read of the multibulk in progress
        self.bulk = -1           # length of the bulk being read (-1: header not read)
        self.args: list = []
        self.held = 0            # bytes held by self.args
        self.limit = query_limit
        self.max_bulk = min(max_bulk, query_limit)

    def feed(self, data) -> None:
        self.buf += data

    def idle(self) -> bool:
        """At a request boundary with nothing buffered."""
        return self.pos >= len(self.buf) and not self.left

    def at_boundary(self) -> bool:
        return not self.left

    def take_rest(self) -> bytes:
        """The unparsed bytes (at a request boundary), removed from the buffer."""
        rest = bytes(self.buf[self.pos:])
        self.buf.clear()
        self.pos = 0
        return rest

    def next(self, authed: bool = True) -> list | None:
        """The next complete request's argv, or None if more bytes are needed.
        Raises ProtocolError (module doc)."""
        buf = self.buf
        while True:
            pos = self.pos
            if pos >= len(buf) and not self.left:
                if pos:
                    buf.clear()
                    self.pos = 0
                return None
            if self.left:
                argv = self._bulks(authed)
            elif buf[pos] == 42:       # '*'
                argv = self._header(authed)
            else:
                argv = self._inline()
            if argv is None:
                self._compact()
                if len(self.buf) - self.pos + self.held > self.limit:
                    raise ProtocolError(None)
                return None
            if argv:
                return argv
            # an empty request (*0, *-1, a blank line): skipped, as Redis does

    def _compact(self) -> None:
        if self.pos > 65536 or self.pos * 2 > len(self.buf):
            del self.buf[:self.pos]
            self.pos = 0

    def _inline(self) -> list | None:
        buf, pos = self.buf, self.pos
        nl = buf.find(b"\n", pos, _c_string_end(buf, pos))
        if nl < 0:
            if len(buf) - pos > INLINE_MAX:
                raise ProtocolError("too big inline request")
            return None
        end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
        argv = split_inline(bytes(buf[pos:end]))
        if argv is None:
            raise ProtocolError("unbalanced quotes in request")
        self.pos = nl + 1
        return argv

    def _line(self, what: str) -> int | None:
        """The position of the CR ending the line at self.pos, or None if it has
        not all arrived (Redis looks for CR and then skips 2 bytes)."""
        buf, pos = self.buf, self.pos
        cr = buf.find(b"\r", pos, _c_string_end(buf, pos))
        if cr < 0:
            if len(buf) - pos > INLINE_MAX:
                raise ProtocolError(f"too big {what} count string")
            return None
        if cr + 2 > len(buf):
            return None
        return cr

    def _header(self, authed: bool) -> list | None:
        cr = self._line("mbulk")
        if cr is None:
            return None
        n = parse_decimal(bytes(self.buf[self.pos + 1:cr]))
        if n is None or n > INT_MAX:
            raise ProtocolError("invalid multibulk length")
        if n > UNAUTH_ARGS and not authed:
            raise ProtocolError("unauthenticated multibulk length")
        self.pos = cr + 2
        if n <= 0:
            return []
        self.left = n
        self.bulk = -1
        self.args = []
        self.held = 0
        return self._bulks(authed)

    def _bulks(self, authed: bool) -> list | None:
        buf = self.buf
        while self.left:
            if self.bulk < 0:
                cr = self._line("bulk")
                if cr is None:
                    return None
                pos = self.pos
                if buf[pos] != 36:     # '$'
                    raise ProtocolError(b"expected '$', got '%c'" % buf[pos])
                n = parse_decimal(bytes(buf[pos + 1:cr]))
                if n is None or n < 0 or n > self.max_bulk:
                    raise ProtocolError("invalid bulk length")
                if n > UNAUTH_BULK and not authed:
                    raise ProtocolError("unauthenticated bulk length")
                self.pos = cr + 2
                self.bulk = n
            pos, n = self.pos, self.bulk
            if len(buf) - pos < n + 2:
                return None
            self.args.append(bytes(buf[pos:pos + n]))
            self.held += n + ARG_OVERHEAD
            self.pos = pos + n + 2
            self.bulk = -1
            self.left -= 1
        argv, self.args, self.held = self.args, [], 0
        return argv


# -- hiredis first, the pure parser for the rest ------------------------------------

def inline_lines(data: bytes) -> list | None:
    """The inline commands of ``data`` if it is whole lines of plain words
    (no quote, NUL, vertical tab or form feed, no line starting with ``*``:
    then bytes.split() splits exactly as sdssplitargs does); else None (the
    pure parser's work)."""
    if data[-1] != 10 or b'"' in data or b"'" in data or b"\0" in data or \
            b"\x0b" in data or b"\x0c" in data:
        return None
    out = []
    for line in data.split(b"\n")[:-1]:
        if line[:1] == b"*":
            return None
        argv = line.split()
        if argv:
            out.append(argv)
    return out


def _frames_end(frames: list, start: int, data: bytes) -> int:
    """Where ``frames[start:]`` (parsed by hiredis from the start of ``data``)
    end in ``data``, each checked to be an array of bulk strings there (hiredis
    also returns a ``+status`` item as bytes, which Redis refuses); -1 if one
    is not. fusedb.resp._hot.frames_end is the same in C."""
    pos = 0
    for argv in frames[start:]:
        if data[pos:pos + 1] != b"*":
            return -1
        pos += 3 + len(str(len(argv)))
        for a in argv:
            if data[pos:pos + 1] != b"$":
                return -1
            pos += len(a) + 5 + len(str(len(a)))
    return pos if pos <= len(data) else -1


frames_end = _frames_end
if kernel.COMPILED:     # the same in C, built and chosen with the kernel (setup.py)
    try:
        from fusedb.resp._hot import frames_end
    except ImportError:
        pass            # fusedb.resp.conn.hot_path says so, or raises when it must


#: A multibulk count of 7 digits or more: hiredis allocates its array when it
#: reads the header (``*2000000000``: 16 GB of address space and seconds of
#: the event loop), so such a chunk goes to the pure parser.
_BIG_COUNT = re.compile(rb"\*-?[0-9]{7}")


class RequestReader:
    """One connection's requests: :meth:`commands` (module doc)."""

    __slots__ = ("pure", "fast", "h")

    def __init__(self, query_limit: int = QUERY_LIMIT, max_bulk: int = MAX_BULK,
                 fast: bool | None = None):
        self.pure = PureParser(query_limit, max_bulk)
        self.fast = HIREDIS if fast is None else fast
        self.h = hiredis.Reader() if self.fast else None

    def idle(self) -> bool:
        """Nothing of a request is held: the next byte received starts one
        (hiredis never holds bytes between chunks: :meth:`commands`)."""
        return self.pure.idle()

    def commands(self, data: bytes, authed: bool = True) -> list:
        """Feed ``data``; the requests now complete, in order (before AUTH at
        most one: the unauthenticated limits apply until AUTH has run; call
        again with b"" for the next). The last item is a ProtocolError
        instance when the stream broke there."""
        pure = self.pure
        if authed and data and data[0] != 42 and pure.idle():
            lines = inline_lines(data)
            if lines is not None:
                return lines
        if not (self.fast and authed):
            pure.feed(data)
            return self._pure(authed)
        if not pure.idle():
            pure.feed(data)
            out = self._pure(authed)
            if not pure.at_boundary() or (out and out[-1].__class__ is ProtocolError):
                return out
            data = pure.take_rest()
            if not data:
                return out
        else:
            out = []
        if not data:
            return out
        if data[0] != 42 or _BIG_COUNT.search(data) is not None:
            pure.feed(data)   # inline; or a count hiredis would allocate at once
            return out + self._pure(authed)
        h = self.h
        h.feed(data)
        start = len(out)
        try:
            while (argv := h.gets()) is not False:
                if argv.__class__ is not list or not argv:
                    raise TypeError    # *0, *-1, a top-level non-array: the pure parser's
                b"".join(argv)         # TypeError unless every item is a bulk string
                out.append(argv)
        except (hiredis.ProtocolError, TypeError):
            pass
        # Where hiredis stopped: the chunk's end (all parsed), or the start of a
        # request it did not return (partial: hiredis's has_data() cannot tell
        # a request whose header alone has arrived; or malformed). The pure
        # parser goes on from there, so hiredis never holds bytes between chunks.
        off = frames_end(out, start, data)
        if off == len(data):
            return out
        self.h = hiredis.Reader()
        if off < 0:         # an item that is not a bulk: the pure parser from the start
            del out[start:]
            off = 0
        pure.feed(data[off:])
        return out + self._pure(authed)

    def _pure(self, authed: bool) -> list:
        out: list = []
        pure = self.pure
        try:
            while (argv := pure.next(authed)) is not None:
                out.append(argv)
                if not authed:
                    break
        except ProtocolError as e:
            out.append(e)
        return out
