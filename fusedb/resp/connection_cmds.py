"""The connection commands: PING ECHO QUIT HELLO AUTH RESET SELECT.

Replies and errors as Redis 7.0.15 (src/server.c pingCommand, echoCommand;
src/networking.c helloCommand, resetCommand, quitCommand,
clientSetNameOrReply; src/acl.c authCommand; src/db.c selectCommand;
arities and flags from src/commands/*.json). Deviations: one database (SELECT
0 only), the one user ``default``, and HELLO's ``server`` field is
``fusedb`` (``version`` is the Redis version whose commands are emulated).
"""

from __future__ import annotations

import hmac

from fusedb.core.entry import parse_decimal
from fusedb.resp.table import command
from fusedb.resp.types import OK, Map, RespError, Status

#: The Redis version whose commands and replies this server follows.
REDIS_VERSION = b"7.0.15"
PONG = Status(b"PONG")
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."


@command("ping", -1, "fast")
def ping(ctx, argv):
    if len(argv) > 2:
        raise RespError("ERR wrong number of arguments for 'ping' command")
    return PONG if len(argv) == 1 else argv[1]


@command("echo", 2, "fast")
def echo(ctx, argv):
    return argv[1]


@command("quit", -1, "fast noauth nomulti noscript")
def quit_(ctx, argv):
    ctx.close_after = True
    return OK


@command("select", 2, "fast")
def select(ctx, argv):
    n = parse_decimal(argv[1])
    if n is None or not -2**31 <= n < 2**31:
        raise RespError("ERR value is not an integer or out of range")
    if n != 0:
        raise RespError("ERR DB index is out of range")
    return OK


def check_password(ctx, user: bytes, password: bytes) -> bool:
    """Authenticate ``ctx`` as ``user`` (only ``default`` exists) with
    ``password``, compared in constant time; with no password configured,
    any password is accepted (Redis's ``nopass`` default user)."""
    want = ctx.server.password
    ok = user == b"default" and (want is None or hmac.compare_digest(password, want))
    if ok:
        ctx.authed = True
    return ok


@command("auth", -2, "fast noauth noscript")
def auth(ctx, argv):
    if len(argv) > 3:
        raise RespError("ERR syntax error")
    if len(argv) == 2:
        if ctx.server.password is None:
            raise RespError("ERR AUTH <password> called without any password configured "
                            "for the default user. Are you sure your configuration is "
                            "correct?")
        user, password = b"default", argv[1]
    else:
        user, password = argv[1], argv[2]
    if not check_password(ctx, user, password):
        raise RespError(WRONGPASS)
    return OK


def set_name(ctx, name: bytes) -> None:
    """CLIENT SETNAME's rule (networking.c clientSetNameOrReply): printable
    ASCII without spaces; an empty name clears it. Raises RespError."""
    if any(c < 33 or c > 126 for c in name):
        raise RespError("ERR Client names cannot contain spaces, newlines or special "
                        "characters.")
    ctx.name = name or None


@command("hello", -1, "fast noauth noscript")
def hello(ctx, argv):
    ver = 0
    i = 1
    if len(argv) >= 2:
        ver = parse_decimal(argv[1])
        if ver is None:
            raise RespError("ERR Protocol version is not an integer or out of range")
        if ver < 2 or ver > 3:
            raise RespError("NOPROTO unsupported protocol version")
        i = 2
    while i < len(argv):
        more = len(argv) - 1 - i
        opt = argv[i].lower()
        if opt == b"auth" and more >= 2:
            if not check_password(ctx, argv[i + 1], argv[i + 2]):
                raise RespError(WRONGPASS)
            i += 3
        elif opt == b"setname" and more:
            set_name(ctx, argv[i + 1])
            i += 2
        else:
            raise RespError(b"ERR Syntax error in HELLO option '%s'" % argv[i])
    if not ctx.authed:
        raise RespError("NOAUTH HELLO must be called with the client already authenticated, "
                        "otherwise the HELLO AUTH <user> <pass> option can be used to "
                        "authenticate the client and select the RESP protocol version at "
                        "the same time")
    if ver:
        ctx.resp = ver
    return Map({b"server": b"fusedb", b"version": REDIS_VERSION, b"proto": ctx.resp,
                b"id": ctx.id, b"mode": b"standalone", b"role": b"master", b"modules": []})


@command("reset", 1, "fast noauth nomulti noscript")
def reset(ctx, argv):
    """A fresh connection's state (networking.c clearClientConnectionState):
    RESP2, no MULTI, no name, not authenticated when a password is set."""
    ctx.resp = 2
    ctx.multi = None
    ctx.multi_failed = False
    ctx.name = None
    ctx.authed = ctx.server.password is None
    return Status(b"RESET")
