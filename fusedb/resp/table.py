"""The command table and :func:`dispatch`: argv (a list of bytes) -> reply value.

Command modules import this module to register their commands; the
connection imports fusedb.resp.commands, which imports every command module
(so this module imports none of them: no import cycle).

Each command is a function ``fn(ctx, argv) -> reply`` (fusedb.resp.types says
what a reply value is), registered with :func:`command` by its module
(fusedb.resp.strings, .keys, .server_cmds, .multi, .scripting), with its
arity (Redis's convention: n exact, -n at least n, counting the name), its
flags and its key positions (first, last, step: Redis's COMMAND INFO), which
EXEC and EVAL use to lock the keys' shards. A command raises
fusedb.resp.types.RespError for an error reply; FuseDB's errors are mapped
by :func:`error_reply`.

Subcommands (CLIENT SETNAME, CONFIG GET, SCRIPT LOAD, ...) register as
``"client|setname"``: the parent becomes a container whose ``subcommands``
dispatch takes argv[1] from, as Redis 7's command table does (server.c
``lookupCommandLogic``); arity errors then name ``client|setname``.

:func:`dispatch` checks, in Redis's order (server.c ``processCommand``),
that the command exists (``commandCheckExistence``), its number of
arguments (``commandCheckArity``), then queues it if a MULTI is open. The
authentication gate is the connection's (fusedb.resp.conn).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from fusedb.core.entry import parse_decimal
from fusedb.errors import (ClosedError, FuseDBError, IntegerOverflowError, LockTimeoutError,
                           NotAnIntegerError)
from fusedb.resp.state import Context
from fusedb.resp.types import QUEUED, Err, RespError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: ``name`` (lowercase bytes; Redis's full name, e.g.
    ``client|setname`` for a subcommand), ``fn``, ``arity``, ``flags`` (a
    frozenset of str: "write", "readonly", "fast", "noauth" (allowed before
    AUTH), "nomulti" (run at once even inside MULTI: EXEC, DISCARD, MULTI,
    QUIT, RESET, WATCH), "noscript" (refused inside a script)), ``keys``
    (first, last, step; (0, 0, 0): no key; last -1: to the end),
    ``subcommands`` (a container's: lowercase subcommand name -> spec; None
    for a plain command), ``stat`` (the key of its call counter in
    ``Server.stats``: ``cmd:<name>``)."""

    name: bytes
    fn: object
    arity: int
    flags: frozenset
    keys: tuple
    subcommands: dict | None = None
    stat: str = ""


#: name (lowercase bytes) -> CommandSpec
TABLE: dict[bytes, CommandSpec] = {}
#: the names as clients send them (lowercase, UPPERCASE) -> CommandSpec: one
#: dict lookup on the hot path, no ``lower()`` copy.
_LOOKUP: dict[bytes, CommandSpec] = {}


def _store(spec: CommandSpec) -> None:
    TABLE[spec.name] = spec
    _LOOKUP[spec.name] = _LOOKUP[spec.name.upper()] = spec


def command(name: str, arity: int, flags: str = "", keys: tuple = (0, 0, 0)):
    """Decorator: register ``fn`` as the command ``name`` (lowercase; a
    subcommand as ``"parent|sub"``: the parent is made a container of arity
    -2 unless it is registered itself, e.g. COMMAND's -1)."""
    def register(fn):
        full = name.encode()
        spec = CommandSpec(full, fn, arity, frozenset(flags.split()), keys, None,
                           "cmd:" + name)
        if b"|" in full:
            parent_name, sub = full.split(b"|", 1)
            parent = TABLE.get(parent_name)
            if parent is None:
                parent = CommandSpec(parent_name, None, -2, frozenset(), (0, 0, 0), {},
                                     "cmd:" + parent_name.decode())
            elif parent.subcommands is None:
                parent = replace(parent, subcommands={})
            parent.subcommands[sub] = spec
            _store(parent)
        else:
            old = TABLE.get(full)
            if old is not None and old.subcommands is not None:
                spec = replace(spec, subcommands=old.subcommands)
            _store(spec)
        return fn
    return register


def key_args(spec: CommandSpec, argv: list) -> list:
    """The keys among ``argv`` by the spec's (first, last, step)."""
    first, last, step = spec.keys
    if not first:
        return []
    last = len(argv) + last if last < 0 else last
    return argv[first:last + 1:step]


def _cstr(arg: bytes, limit: int) -> str:
    """``%.<limit>s`` of a C string: up to the first NUL, at most ``limit`` bytes."""
    return arg.split(b"\0", 1)[0][:limit].decode("latin-1")


def unknown_command(argv: list) -> Err:
    """Redis's reply to a command it does not know (server.c
    ``commandCheckExistence``): the name and the arguments, quoted, up to
    about 128 characters. CR and LF become spaces (RespError does it)."""
    args = ""
    for arg in argv[1:]:
        if len(args) >= 128:
            break
        args += f"'{_cstr(arg, 128 - len(args))}' "
    msg = f"ERR unknown command '{_cstr(argv[0], 128)}', with args beginning with: {args}"
    return RespError(msg.encode("latin-1")).reply


def lookup(argv: list) -> CommandSpec | Err:
    """The spec ``argv`` names (a subcommand's for a container), or the
    error reply for an unknown command or subcommand, or a wrong number of
    arguments (server.c ``commandCheckExistence``, ``commandCheckArity``)."""
    spec = _LOOKUP.get(argv[0])
    if spec is None:
        spec = TABLE.get(argv[0].lower())
        if spec is None:
            return unknown_command(argv)
    n = len(argv)
    if spec.subcommands is not None and n > 1:
        sub = spec.subcommands.get(argv[1].lower())
        if sub is None:
            return RespError(b"ERR unknown subcommand '%s'. Try %s HELP."
                             % (_cstr(argv[1], 128).encode("latin-1"),
                                argv[0].upper())).reply
        spec = sub
    a = spec.arity
    if (a > 0 and n != a) or n < -a:
        return Err(b"ERR wrong number of arguments for '%s' command" % spec.name)
    return spec


def dispatch(ctx: Context, argv: list) -> object:
    """Run ``argv`` (a non-empty list of bytes) for the connection ``ctx``;
    returns the reply value (an error reply as types.Err). Inside MULTI a
    command (without the "nomulti" flag) is queued on ``ctx.multi`` as
    (spec, argv) and the reply is QUEUED; one refused at queue time (unknown,
    wrong arity) sets ``ctx.multi_failed`` (EXEC then aborts). Never raises
    for a command's failure; raises only what must end the process
    (ClosedError: the daemon is gone)."""
    # lookup() inlined for the hot path (GET, SET, INCR by redis-benchmark).
    spec = _LOOKUP.get(argv[0])
    if spec is None or spec.subcommands is not None:
        spec = lookup(argv)
    else:
        a = spec.arity
        n = len(argv)
        if (a > 0 and n != a) or n < -a:
            spec = Err(b"ERR wrong number of arguments for '%s' command" % spec.name)
    if spec.__class__ is Err:
        if ctx.multi is not None:
            ctx.multi_failed = True
        return spec
    if ctx.multi is not None and "nomulti" not in spec.flags:
        ctx.multi.append((spec, argv))
        return QUEUED
    ctx.last_cmd = spec.name
    ctx.server.stats[spec.stat] += 1
    try:
        return spec.fn(ctx, argv)
    except RespError as e:
        return e.reply
    except Exception as e:      # noqa: BLE001 - a command's failure is its client's error reply
        return error_reply(e)


_MESSAGES = {
    NotAnIntegerError: "ERR value is not an integer or out of range",
    IntegerOverflowError: "ERR increment or decrement would overflow",
}


def error_reply(exc: BaseException) -> Err:
    """The error reply for ``exc``: a RespError's own; a FuseDB error mapped
    to Redis's message for the same condition (NotAnIntegerError,
    IntegerOverflowError), or ``ERR <FuseDB's message>`` (KeyTooLargeError
    for an empty or too long key, ValueTooLargeError, WriteStallError,
    InvalidArgumentError, DiskError, ...), ``BUSY <message>`` for
    LockTimeoutError. ClosedError is re-raised (the daemon is gone: the
    server process exits). Any other exception (a bug) becomes
    ``ERR internal error: <type>: <message>`` (its traceback logged): the
    connection stays up."""
    if isinstance(exc, RespError):
        return exc.reply
    if isinstance(exc, ClosedError):
        raise exc
    msg = _MESSAGES.get(type(exc))
    if msg is None:
        if isinstance(exc, LockTimeoutError):
            msg = f"BUSY {exc}"
        elif isinstance(exc, FuseDBError):
            msg = f"ERR {exc}"
        else:
            log.error("internal error", exc_info=exc)
            msg = f"ERR internal error: {type(exc).__name__}: {exc}"
    return RespError(msg).reply


# -- argument helpers shared by the command modules -------------------------------------

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


def int_arg(arg: bytes, msg: str = "ERR value is not an integer or out of range") -> int:
    """``arg`` as a signed 64-bit integer, parsed as strictly as Redis's
    ``string2ll`` (util.c: no spaces, no '+', no leading zeros); else
    RespError(msg)."""
    n = parse_decimal(arg)
    if n is None:
        raise RespError(msg)
    return n


SYNTAX = "ERR syntax error"
