"""Server commands: CLIENT (SETNAME GETNAME SETINFO ID INFO LIST KILL), COMMAND
(bare, COUNT, INFO, DOCS, LIST), CONFIG GET, TIME. INFO is in fusedb.resp.info.

Replies follow Redis 7.0.15 (src/networking.c ``clientCommand``,
``catClientInfoString``; src/server.c ``commandCommand``; src/config.c
``configGetCommand``), and CLIENT SETINFO Redis 7.2's (redis-py 8 sends it on
connect). CLIENT LIST, INFO and KILL see the connections of the server
process that answers only (each line says which: ``fusedb-server=i``);
killing a client of another server process needs its id and that process.
CONFIG GET answers from a fixed set of parameters (``save`` and
``appendonly`` for redis-benchmark, the listener's settings for tools);
CONFIG SET and the other CONFIG subcommands are refused.
"""

from __future__ import annotations

import time

from fusedb.resp.table import SYNTAX, TABLE, command, int_arg
from fusedb.resp.glob import stringmatch
from fusedb.resp.types import OK, Map, RespError, Status, Verbatim

# -- CLIENT ------------------------------------------------------------------------------


def _valid_attr(value: bytes) -> bool:
    """networking.c ``validateClientAttr``: printable ASCII without spaces."""
    return all(33 <= c <= 126 for c in value)


@command("client|setname", 3, "noscript")
def client_setname(ctx, argv):
    name = argv[2]
    if not _valid_attr(name):
        raise RespError("ERR Client names cannot contain spaces, newlines or special characters.")
    ctx.name = name or None
    return OK


@command("client|getname", 2, "noscript")
def client_getname(ctx, argv):
    return ctx.name


@command("client|setinfo", 4, "noscript")
def client_setinfo(ctx, argv):
    attr, value = argv[2].lower(), argv[3]
    if attr not in (b"lib-name", b"lib-ver"):
        raise RespError(b"ERR Unrecognized option '%s'" % argv[2])
    if not _valid_attr(value):
        raise RespError(b"ERR %s cannot contain spaces, newlines or special characters."
                        % argv[2])
    if attr == b"lib-name":
        ctx.lib_name = value or None
    else:
        ctx.lib_ver = value or None
    return OK


@command("client|id", 2, "noscript")
def client_id(ctx, argv):
    return ctx.id


def client_line(c, now: float) -> bytes:
    """One line of CLIENT LIST for the connection ``c`` (its fields as Redis
    7.2's catClientInfoString, those FuseDB has, plus fusedb-server)."""
    multi = -1 if c.multi is None else len(c.multi)
    return (b"id=%d addr=%s laddr=%s fd=-1 name=%s age=%d idle=%d flags=N db=0 sub=0 psub=0 "
            b"ssub=0 multi=%d watch=0 cmd=%s user=default redir=-1 resp=%d lib-name=%s "
            b"lib-ver=%s fusedb-server=%d"
            % (c.id, c.addr.encode(), c.laddr.encode(), c.name or b"", now - c.since,
               now - c.last, multi, c.last_cmd, c.resp, c.lib_name or b"", c.lib_ver or b"",
               c.server.index))


@command("client|info", 2, "noscript")
def client_info(ctx, argv):
    return Verbatim(client_line(ctx, time.time()) + b"\n")


@command("client|list", -2, "noscript")
def client_list(ctx, argv):
    clients = list(ctx.server.clients.values()) or [ctx]
    if len(argv) == 4 and argv[2].lower() == b"type":
        kind = argv[3].lower()
        if kind not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
            raise RespError(b"ERR Unknown client type '%s'" % argv[3])
        if kind != b"normal":
            clients = []
    elif len(argv) > 3 and argv[2].lower() == b"id":
        by_id = {c.id: c for c in clients}
        ids = [int_arg(arg, "ERR Invalid client ID") for arg in argv[3:]]
        clients = [by_id[i] for i in ids if i in by_id]
    elif len(argv) != 2:
        raise RespError(SYNTAX)
    now = time.time()
    return Verbatim(b"".join(client_line(c, now) + b"\n" for c in clients))


def _kill(ctx, victim) -> None:
    if victim is ctx:
        ctx.close_after = True
    elif victim.kill is not None:
        victim.kill()


@command("client|kill", -3, "noscript")
def client_kill(ctx, argv):
    clients = list(ctx.server.clients.values())
    if len(argv) == 3:      # the old form: CLIENT KILL addr:port
        for c in clients:
            if c.addr.encode() == argv[2]:
                _kill(ctx, c)
                return OK
        raise RespError("ERR No such client")
    tests = []
    skipme = True
    i = 2
    while i < len(argv):
        if i + 1 >= len(argv):
            raise RespError(SYNTAX)
        opt, arg = argv[i].lower(), argv[i + 1]
        if opt == b"id":
            n = int_arg(arg, "ERR client-id should be greater than 0")
            if n <= 0:
                raise RespError("ERR client-id should be greater than 0")
            tests.append(lambda c, n=n: c.id == n)
        elif opt == b"type":
            kind = arg.lower()
            if kind not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
                raise RespError(b"ERR Unknown client type '%s'" % arg)
            tests.append(lambda c, ok=kind == b"normal": ok)
        elif opt == b"addr":
            tests.append(lambda c, a=arg: c.addr.encode() == a)
        elif opt == b"laddr":
            tests.append(lambda c, a=arg: c.laddr.encode() == a)
        elif opt == b"user":
            tests.append(lambda c, u=arg: u == b"default")
        elif opt == b"skipme":
            if arg.lower() not in (b"yes", b"no"):
                raise RespError(SYNTAX)
            skipme = arg.lower() == b"yes"
        else:
            raise RespError(SYNTAX)
        i += 2
    killed = 0
    for c in clients:
        if (c is ctx and skipme) or not all(t(c) for t in tests):
            continue
        _kill(ctx, c)
        killed += 1
    return killed


# -- COMMAND -----------------------------------------------------------------------------

_FLAG_NAMES = {"noauth": b"no_auth", "nomulti": b"no_multi"}
_GROUPS = {"fusedb.resp.strings": b"string", "fusedb.resp.keys": b"generic",
           "fusedb.resp.multi": b"transactions", "fusedb.resp.scripting": b"scripting",
           "fusedb.resp.connection_cmds": b"connection"}


def command_info(spec) -> list:
    """COMMAND INFO's entry for ``spec`` (Redis 7: name, arity, flags, first,
    last and step key, ACL categories, tips, key specs, subcommands)."""
    flags = [Status(_FLAG_NAMES.get(f, f.encode())) for f in sorted(spec.flags)]
    subs = [command_info(s) for s in (spec.subcommands or {}).values()]
    return [spec.name, spec.arity, flags, *spec.keys, [], [], [], subs]


def _docs(spec) -> Map:
    fn = spec.fn or next(iter(spec.subcommands.values())).fn
    group = _GROUPS.get(getattr(fn, "__module__", ""), b"server")
    doc = Map({b"summary": b"", b"since": b"", b"group": group, b"complexity": b""})
    if spec.subcommands:
        doc[b"subcommands"] = Map({s.name: _docs(s) for s in spec.subcommands.values()})
    return doc


@command("command", -1, "noscript")
def command_(ctx, argv):
    return [command_info(s) for s in TABLE.values()]


@command("command|count", 2, "noscript")
def command_count(ctx, argv):
    return len(TABLE)


@command("command|list", -2, "noscript")
def command_list(ctx, argv):
    return list(TABLE)


@command("command|info", -2, "noscript")
def command_info_(ctx, argv):
    names = argv[2:] or list(TABLE)
    return [None if (s := TABLE.get(n.lower())) is None else command_info(s) for n in names]


@command("command|docs", -2, "noscript")
def command_docs(ctx, argv):
    names = [n.lower() for n in argv[2:]] or list(TABLE)
    return Map({n: _docs(TABLE[n]) for n in names if n in TABLE})


# -- CONFIG ------------------------------------------------------------------------------

_APPENDFSYNC = {"sync": "always", "interval": "everysec", "none": "no"}


def config_values(ctx) -> dict:
    """CONFIG GET's parameters (name -> str): FuseDB's fixed answers, then
    what the server process was started with (``Server.config``)."""
    durability = ctx.server.config.get("durability") or durability_of(ctx.db)
    values = {
        "save": "", "appendonly": "no" if durability == "none" else "yes",
        "appendfsync": _APPENDFSYNC.get(durability, "everysec"), "databases": "1",
        "maxclients": "10000", "port": "0", "bind": "127.0.0.1", "unixsocket": "",
        "unixsocketperm": "700", "timeout": "0", "tcp-keepalive": "300",
        "maxmemory": "0", "maxmemory-policy": "noeviction", "protected-mode": "yes",
        "proto-max-bulk-len": "536870912", "lua-time-limit": "5000",
        "busy-reply-threshold": "5000", "io-threads": str(ctx.server.servers),
        "dir": str(ctx.db.path),
    }
    for name, value in ctx.server.config.items():
        values[name.lower()] = str(value)
    values.pop("requirepass", None)     # never shown
    return values


def durability_of(db) -> str:
    """The database's durability mode ("sync", "interval", "none"), from the
    options the daemon gave its clients."""
    opts = getattr(getattr(db, "_store", None), "opts", None)
    return getattr(opts, "durability", "") or ""


@command("config|get", -3, "noscript")
def config_get(ctx, argv):
    values = config_values(ctx)
    out = Map()
    for pattern in argv[2:]:
        p = pattern.lower()
        for name, value in values.items():
            if stringmatch(p, name.encode()):
                out[name.encode()] = value.encode()
    return out


@command("config|set", -4, "noscript")
def config_set(ctx, argv):
    raise RespError("ERR CONFIG SET is not supported by FuseDB: set options with "
                    "fusedb serve's flags")


# -- HELP of the containers (networking.c addReplyHelp) -------------------------------------

def help_reply(argv) -> list:
    """Redis's HELP reply for the container ``argv[0]``: a header, its
    subcommands (FuseDB's, one line each), and HELP."""
    parent = TABLE[argv[0].lower()]
    lines = [Status(b"%s <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
                    % argv[0].upper())]
    lines += [Status(name.upper()) for name in parent.subcommands if name != b"help"]
    return lines + [Status(b"HELP"), Status(b"    Prints this help.")]


for _parent in ("client", "command", "config"):
    command(f"{_parent}|help", 2, "noscript")(lambda ctx, argv: help_reply(argv))


# -- TIME --------------------------------------------------------------------------------

@command("time", 1, "fast")
def time_(ctx, argv):
    sec, ns = divmod(time.time_ns(), 1_000_000_000)
    return [b"%d" % sec, b"%d" % (ns // 1000)]
