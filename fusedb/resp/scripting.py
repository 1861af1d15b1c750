"""EVAL, EVALSHA (and their _RO forms) and SCRIPT: Lua 5.1 scripts run by lupa.

Redis's semantics (Redis 7.0.15 src/eval.c ``evalGenericCommand``,
src/script_lua.c ``luaRedisGenericCommand``, ``luaReplyToRedisReply``,
``luaCallFunction``; redis.io "Scripting with Lua" and "Lua API reference"):

- A script is compiled once per server process with the chunk name
  ``@user_script`` and runs with the globals KEYS and ARGV. Globals are
  read-only; reading an undefined one is an error, as in Redis.
- ``redis.call`` / ``redis.pcall`` run a command of the same command table
  (fusedb.resp.commands) against the script's transaction. Replies become Lua
  values as Redis converts them under RESP2 (integer -> number, bulk -> string,
  null -> false, array -> table, status -> ``{ok=...}``, error -> ``{err=...}``)
  and the script's result goes back the other way (number -> integer,
  truncated; table -> array up to its first nil; ``{ok=}`` / ``{err=}``;
  false -> null; true -> 1).
- Atomicity: the whole script runs in one ``db.transact`` over its declared
  KEYS' shards. A key it did not declare (or KEYS/SCAN) makes the transaction
  raise ``fusedb.api.transaction.Retry``; the bridge lets it through the Lua
  run (remembered, the Lua call fails, re-raised when Lua returns) and the
  transaction reruns the script with every shard locked. As in Redis a failing
  command does not undo the ones before it. Unlike Redis, a script stopped by
  the time limit (server config ``lua-time-limit``, milliseconds, default
  5000) applies nothing: ``-ERR script killed: exceeded lua-time-limit
  (nothing applied)``. Inside MULTI/EXEC that is the EVAL's element of the
  EXEC reply, and what the script wrote before stays, as the other commands'.
- The script cache is shared by the server processes: SCRIPT LOAD and EVAL
  store the body in the database under ``RESERVED + b"resp:script:" + sha``
  (hidden from KEYS/SCAN/DBSIZE), so EVALSHA works on a connection served by
  another process; EVALSHA asks the database each time, so SCRIPT FLUSH on
  one process is seen by all (inside MULTI it asks through the transaction,
  so such an EXEC locks every shard). A body larger than the database's
  max_value_size runs by EVAL but cannot be loaded (an error reply).
- A script's writes are one transaction, bounded as EXEC's (fusedb.resp.multi:
  one buffer per leaf); so limits' ``storage.reset()`` (clear_keys.lua: KEYS,
  then DEL of them all in one script) fails, writing nothing, once the keys
  to delete outgrow a buffer (measured: 2,000 limits keys deleted, 4,000
  refused, with the default 256 KiB ``buffer_bytes``).
- A server process's Lua heap is bounded (256 MiB, lupa's max_memory): a
  script over it fails with ``ERR Error running script <sha>, not enough
  memory`` (its writes before that stay, as for any script error).
- Missing compared to Redis: the cjson, cmsgpack, struct and bit libraries,
  redis.setresp (scripts always see RESP2 replies), redis.log (a no-op),
  SCRIPT KILL (always ``-NOTBUSY``: a running script is bounded by the
  time limit instead), SCRIPT DEBUG, FUNCTION/FCALL.

Without lupa (``pip install 'fusedb[server]'``) EVAL, EVALSHA and SCRIPT LOAD
answer ``-ERR scripting needs lupa: pip install 'fusedb[server]'``.
"""

from fusedb.core.entry import parse_decimal
from fusedb.resp.table import command
from fusedb.resp.keys import RESERVED
from fusedb.resp.lua import Scripts, sha1hex
from fusedb.resp.types import OK, RespError

#: Where a script's body is kept, by its sha (a reserved key: KEYS/SCAN skip it).
SCRIPT_PREFIX = RESERVED + b"resp:script:"
NOSCRIPT = "NOSCRIPT No matching script. Please use EVAL."


def eval_keys(argv: list) -> list:
    """The KEYS of ``EVAL body numkeys key... arg...`` (or EVALSHA); [] when
    numkeys is not valid (EVAL then answers the error)."""
    n = parse_decimal(argv[2]) if len(argv) > 2 else None
    return argv[3:3 + n] if n is not None and 0 <= n <= len(argv) - 3 else []


def _numkeys(argv: list) -> int:
    """numkeys, checked as Redis's evalGenericCommand does; RespError if bad."""
    n = parse_decimal(argv[2])
    if n is None:
        raise RespError("ERR value is not an integer or out of range")
    if n > len(argv) - 3:
        raise RespError("ERR Number of keys can't be greater than number of args")
    if n < 0:
        raise RespError("ERR Number of keys can't be negative")
    return n


def scripts(ctx) -> Scripts:
    """This process's :class:`Scripts` (``ctx.server.scripts``), made on first use."""
    if ctx.server.scripts is None:
        ctx.server.scripts = Scripts()
    return ctx.server.scripts


# -- the shared script store -----------------------------------------------------------

def _stored(ctx, sha: bytes) -> bytes | None:
    """The body stored under ``sha``, if its SHA1 is ``sha``: the store is keys
    a client could also write (SET), so a body is never trusted by its key."""
    body = ctx.store.get(SCRIPT_PREFIX + sha)
    return body if body is not None and sha1hex(body) == sha else None


def _store(ctx, sha: bytes, body: bytes, strict: bool) -> None:
    """Remember ``body`` in the database for every server process. ``strict``
    (SCRIPT LOAD): a body the database refuses is an error reply; otherwise
    (EVAL) the script still runs here, and EVALSHA elsewhere answers NOSCRIPT."""
    if len(body) > ctx.db.max_value_size:
        if strict:
            raise RespError(f"ERR script larger than the database's max_value_size "
                            f"({ctx.db.max_value_size} bytes): use EVAL")
        return
    if _stored(ctx, sha) is None:       # a read (~1 µs) spares a write's cost per EVAL
        ctx.store.put(SCRIPT_PREFIX + sha, body)


# -- the commands ------------------------------------------------------------------------

def _eval(ctx, argv: list, readonly: bool) -> object:
    nkeys = _numkeys(argv)
    lua = scripts(ctx)
    body, sha = argv[1], sha1hex(argv[1])
    known = sha in lua.functions
    fn = lua.compile(body, sha)
    if ctx.store is ctx.db or not known:   # inside EXEC: once per process
        _store(ctx, sha, body, strict=False)
    return lua.run(ctx, sha, fn, nkeys, argv[3:], readonly)


def _evalsha(ctx, argv: list, readonly: bool) -> object:
    sha = argv[1].lower()
    if len(sha) != 40:
        raise RespError(NOSCRIPT)
    nkeys = _numkeys(argv)
    lua = scripts(ctx)
    body = _stored(ctx, sha)
    if body is None:
        lua.functions.pop(sha, None)
        raise RespError(NOSCRIPT)
    return lua.run(ctx, sha, lua.compile(body, sha), nkeys, argv[3:], readonly)


@command("eval", -3, "noscript write")
def eval_command(ctx, argv):
    return _eval(ctx, argv, False)


@command("eval_ro", -3, "noscript readonly")
def eval_ro_command(ctx, argv):
    return _eval(ctx, argv, True)


@command("evalsha", -3, "noscript write")
def evalsha_command(ctx, argv):
    return _evalsha(ctx, argv, False)


@command("evalsha_ro", -3, "noscript readonly")
def evalsha_ro_command(ctx, argv):
    return _evalsha(ctx, argv, True)


@command("script|load", 3, "noscript")
def script_load(ctx, argv):
    sha = sha1hex(argv[2])
    scripts(ctx).compile(argv[2], sha)
    _store(ctx, sha, argv[2], strict=True)
    return sha


@command("script|exists", -3, "noscript")
def script_exists(ctx, argv):
    return [int(_stored(ctx, sha.lower()) is not None) for sha in argv[2:]]


@command("script|flush", -2, "noscript")
def script_flush(ctx, argv):
    if len(argv) > 3 or (len(argv) == 3 and argv[2].lower() not in (b"sync", b"async")):
        raise RespError("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
    ctx.atomic(lambda tx: [tx.delete(k) for k in tx.keys(SCRIPT_PREFIX)], None)
    if ctx.server.scripts is not None:
        ctx.server.scripts.functions.clear()
    return OK


@command("script|kill", 2, "noscript")
def script_kill(ctx, argv):
    raise RespError("NOTBUSY No scripts in execution right now.")


@command("script|help", 2, "noscript")
def script_help(ctx, argv):
    return [
        b"SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        b"EXISTS <sha1> [<sha1> ...]",
        b"    Return information about the existence of the scripts in the script cache.",
        b"FLUSH [ASYNC|SYNC]",
        b"    Flush the Lua scripts cache.",
        b"KILL",
        b"    Kill the currently executing Lua script.",
        b"LOAD <script>",
        b"    Load a script into the scripts cache without executing it.",
        b"HELP",
        b"    Print this help.",
    ]
