"""One client connection of a server process: an asyncio Protocol.

Per ``data_received``: parse (fusedb.resp.parse), run each command
(``commands.dispatch``), encode each reply (fusedb.resp.reply) and write the
replies of the chunk with one ``transport.write`` (a pipeline is one send).

- Before AUTH (when the server has a password) only commands flagged
  "noauth" run; others get ``-NOAUTH Authentication required.`` (Redis 7.0.15
  src/server.c processCommand: an unknown command or a wrong arity is
  reported first).
- Backpressure: when the transport's write buffer passes its high-water mark
  (``pause_writing``), the connection stops running commands and reading; the
  commands already parsed wait and run on ``resume_writing``. A client that
  pipelines without reading is therefore not read, and its memory stays
  bounded: the query limit, the write buffer's high-water mark, and the
  replies of one read's commands up to OUT_HIGH.
- A protocol error (parse.ProtocolError) writes its reply (if any) after the
  replies of the commands before it, then closes the connection.
- QUIT (``ctx.close_after``): nothing after it runs; closed once its reply
  is written. A half-closed connection (EOF from the client) gets the replies
  of what it sent, then is closed.
- ``maxclients`` is per server process: the connection over it gets
  ``-ERR max number of clients reached`` and is closed (Redis networking.c
  acceptCommonHandler).
- Counters in ``server.stats``: commands, connections, rejected, net_in,
  net_out (bytes).
"""

from __future__ import annotations

import asyncio
import importlib
import logging

from fusedb.core import kernel
from fusedb.errors import ClosedError
from fusedb.resp import commands, connection_cmds  # noqa: F401 - registers PING, AUTH, ...
from fusedb.resp.parse import ProtocolError, RequestReader
from fusedb.resp.reply import encode
from fusedb.resp.state import Context, Server
from fusedb.resp.types import Err

log = logging.getLogger("fusedb.serve")

NOAUTH = Err(b"NOAUTH Authentication required.")
MAXCLIENTS = b"-ERR max number of clients reached\r\n"
OUT_HIGH = 1 << 20              # bytes of replies gathered before writing them out
WRITE_HIGH = 4 << 20            # the transport's write buffer high-water mark (bytes)
HOT_IN = 4096                   # bytes of requests given to the compiled path at once


class Limits:
    """The per-connection limits of one server process: ``maxclients``,
    ``query_limit`` (bytes held for one request), ``max_bulk`` (bytes)."""

    __slots__ = ("maxclients", "query_limit", "max_bulk")

    def __init__(self, maxclients: int = 10000, query_limit: int = 64 << 20,
                 max_bulk: int = 512 << 20):
        self.maxclients = maxclients
        self.query_limit = query_limit
        self.max_bulk = max_bulk


class Connection(asyncio.Protocol):
    """One client. ``fatal(exc)`` is called with a ClosedError (the daemon is
    gone): the process then exits (fusedb.resp.process)."""

    __slots__ = ("server", "limits", "fatal", "transport", "ctx", "reader", "pending",
                 "paused", "closing", "eof", "hot")

    def __init__(self, server: Server, limits: Limits, fatal):
        self.server = server
        self.limits = limits
        self.fatal = fatal
        self.transport = None
        self.ctx: Context | None = None
        self.reader: RequestReader | None = None
        self.pending: list = []       # parsed commands not run yet (writing paused)
        self.paused = False
        self.closing = False
        self.eof = False
        if server.hot is None:
            server.hot = hot_path(server.db)
        self.hot = server.hot

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        server.stats["connections"] += 1
        if len(server.clients) >= self.limits.maxclients:
            server.stats["rejected"] += 1
            self.closing = True
            transport.write(MAXCLIENTS)
            transport.close()
            return
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        ctx = Context(server, _addr(transport.get_extra_info("peername")),
                      _addr(transport.get_extra_info("sockname")))
        ctx.kill = self.kill
        self.ctx = ctx
        server.clients[ctx.id] = ctx
        self.reader = RequestReader(self.limits.query_limit, self.limits.max_bulk)

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.pending = []
        if self.ctx is not None:
            self.server.clients.pop(self.ctx.id, None)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.server.stats["net_in"] += len(data)
        ctx = self.ctx
        out = None
        if self.hot and ctx.authed and not self.pending and ctx.multi is None \
                and self.reader.idle():
            # The compiled path, HOT_IN bytes of requests at a time (its replies,
            # up to max_value_size each, are bounded so, and written before the
            # next slice: a client that does not read is not read either).
            pos, end = 0, len(data)
            while True:
                out = []
                piece = data if end <= HOT_IN else data[pos:pos + HOT_IN]
                n = self.hot.run(piece, ctx.resp, out)
                if self.hot.error is not None and not self._hot_error(out):
                    return         # the daemon is gone
                if not n:
                    break          # the rest starts with a request for the general path
                ctx.last_cmd = _HOT_NAMES[self.hot.last]
                pos += n
                if pos == end:
                    self._write(out)
                    return
                if piece is data:
                    break          # as above
                self._write(out)
                out = None
                if self.paused:    # the rest waits, parsed, until the client reads
                    self.pending = self.reader.commands(data[pos:], True)
                    return
            if pos:
                data = data[pos:]
        cmds = self.reader.commands(data, ctx.authed)
        if not ctx.authed or self.pending:
            self.pending += cmds
            self._run_pending()
            return
        self._run(cmds, out)

    def _hot_error(self, out: list) -> bool:
        """The hot path's last request raised (``hot.error``): its reply is the
        error as the command table maps it, appended to ``out``. A ClosedError
        (the daemon is gone) ends the process as in ``_run``: False."""
        e, self.hot.error = self.hot.error, None
        if isinstance(e, ClosedError):
            self.closing = True
            self.fatal(e)
            if out:
                self._write(out)
            self.transport.close()
            return False
        out.append(encode(commands.error_reply(e), self.ctx.resp))
        return True

    def _count_hot(self) -> None:
        """Add the hot path's counts to the server's statistics. Done before
        any other command of this process runs (the only readers of the
        statistics are commands: INFO reads them exact), not per read, where it
        cost 15% of a GET's time at -P 1."""
        hot, stats = self.hot, self.server.stats
        if not (hot.gets or hot.sets or hot.incrs):
            return
        stats["commands"] += hot.gets + hot.sets + hot.incrs
        stats["cmd:get"] += hot.gets
        stats["cmd:set"] += hot.sets
        stats["cmd:incr"] += hot.incrs
        stats["misses"] += hot.misses
        hot.gets = hot.sets = hot.incrs = hot.misses = 0

    def eof_received(self) -> bool:
        self.eof = True
        if not self.pending and not self.closing:
            self.closing = True
            self.transport.close()
        return True             # keep the transport open to write what is pending

    def pause_writing(self) -> None:
        self.paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.closing:
            return
        self._run_pending()
        if not self.paused and not self.closing:
            self.transport.resume_reading()

    # -- running commands --------------------------------------------------------------

    def _run(self, cmds: list, out: list | None = None) -> None:
        """Run ``cmds`` (argv lists; a ProtocolError last if the stream broke),
        write the replies (after ``out``: those of the hot path, same read);
        stop early when writing pauses (the rest waits in ``pending``)."""
        ctx = self.ctx
        dispatch = commands.dispatch
        if self.hot:
            self._count_hot()
        if out is None:
            out = []
        size = 0
        i = 0
        try:
            for argv in cmds:
                i += 1
                if argv.__class__ is ProtocolError:
                    if argv.reply is not None:
                        out.append(argv.reply)
                    else:
                        log.info("closing client %s: query buffer limit reached", ctx.addr)
                    self.closing = True
                    break
                try:
                    reply = dispatch(ctx, argv) if ctx.authed else self._unauthed(argv)
                except ClosedError:
                    raise
                except Exception as e:       # a bug: this command fails, not the connection
                    log.exception("command %r failed", argv[0][:64])
                    reply = Err(b"ERR internal error: %s" % type(e).__name__.encode())
                b = encode(reply, ctx.resp)
                out.append(b)
                if ctx.close_after:
                    self.closing = True
                    break
                size += len(b)
                if size > OUT_HIGH:
                    self._write(out)
                    out = []
                    size = 0
                    if self.paused:
                        self.pending = cmds[i:]
                        break
        except ClosedError as e:
            self.closing = True
            self.fatal(e)
        self.server.stats["commands"] += i
        if out:
            self._write(out)
        if self.closing or (self.eof and not self.pending):
            self.closing = True
            self.transport.close()

    def _run_pending(self) -> None:
        """Run the commands held in ``pending``, then those the parser still
        holds (before AUTH it gives one at a time: the unauthenticated limits
        apply until AUTH has run)."""
        while not self.paused and not self.closing:
            cmds, self.pending = self.pending, []
            if not cmds:
                cmds = self.reader.commands(b"", self.ctx.authed)
                if not cmds:
                    return
            self._run(cmds)

    def _unauthed(self, argv: list):
        """Before AUTH: unknown commands and arity errors as usual; NOAUTH for
        any command without the "noauth" flag."""
        spec = commands.TABLE.get(argv[0].lower())
        if spec is not None and "noauth" not in spec.flags and _arity_ok(spec.arity, argv):
            return NOAUTH
        return commands.dispatch(self.ctx, argv)

    def _write(self, out: list) -> None:
        data = b"".join(out) if len(out) > 1 else out[0]
        self.server.stats["net_out"] += len(data)
        self.transport.write(data)

    def kill(self) -> None:
        """Close this connection (CLIENT KILL): after the reply being written."""
        if not self.closing:
            self.closing = True
            self.pending = []
            if self.transport is not None:
                self.transport.close()


_HOT_NAMES = (b"NULL", b"get", b"set", b"incr")


def hot_path(db):
    """The compiled hot path (fusedb.resp._hot.HotPath) over ``db``, or False
    where the kernel runs pure Python (FUSEDB_NO_EXTENSIONS, not built): it is
    built and chosen with the kernel, and FUSEDB_REQUIRE_EXTENSIONS requires it."""
    if not kernel.COMPILED or db._x.kernel is None:
        return False
    try:
        mod = importlib.import_module("fusedb.resp._hot")
        kernel._check_fresh(mod.__file__, "_hot.pyx")
        return mod.HotPath(db)
    except ImportError as e:
        if kernel._flag(kernel.REQUIRE_EXTENSIONS):
            raise ImportError(f"{kernel.REQUIRE_EXTENSIONS} is set but the hot path "
                              f"fusedb.resp._hot cannot be loaded: {e}") from e
        log.warning("the compiled hot path is not built (%s): the Redis protocol runs "
                    "its pure-Python path", e)
        return False


def _arity_ok(arity: int, argv: list) -> bool:
    return len(argv) == arity if arity > 0 else len(argv) >= -arity


def _addr(name) -> str:
    """``ip:port`` of a TCP address, or ``/path:0`` of a unix socket (as Redis
    writes them in CLIENT LIST)."""
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return f"{name or ''}:0"
