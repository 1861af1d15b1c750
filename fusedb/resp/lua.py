"""The Lua side of EVAL: one lupa Lua 5.1 runtime per server process.

The sandbox (no io, os, debug, loadfile, dofile, python; read-only globals,
reading an undefined one is an error), the ``redis`` table (call, pcall,
sha1hex, status_reply, error_reply, ...), Redis's error handler (the
``script: <sha>, on @user_script:<line>.`` suffix), the time limit (a count
hook every 100,000 instructions), and the conversions between reply values
(fusedb.resp.types) and Lua values. Redis 7.0.15 src/script_lua.c and
src/eval.c are the reference for every text and rule here; the commands are
in fusedb.resp.scripting.
"""

from __future__ import annotations

import hashlib
import time

from fusedb.errors import KeyTooLargeError
from fusedb.resp.table import TABLE, dispatch
from fusedb.resp.types import Err, Map, RespError, Status

KILLED = b"ERR script killed: exceeded lua-time-limit (nothing applied)"


def atomic(ctx, fn, keys: list):
    """``ctx.atomic(fn, keys)`` for EXEC and EVAL, whose keys come from the
    client: a key the database refuses (empty, over max_key_size: Redis
    takes them) cannot be locked, so the transaction locks every shard
    instead and the command using that key fails alone, with FuseDB's error,
    as it would outside MULTI. (Nothing ran yet: the keys are checked before
    ``fn``, and ``fn``'s own errors are replies, never raised.)"""
    try:
        return ctx.atomic(fn, keys)
    except KeyTooLargeError:
        return ctx.atomic(fn, None)

# The sandbox, the redis table, the error handler and the runner, in Lua.
# Receives the Python callbacks; returns compile(body) and run(fn, ro, nkeys, ...).
PRELUDE = b"""
local call, pcall_, expired, sha1hex = ...
local sethook, getinfo = debug.sethook, debug.getinfo
local rawpcall, rawset, type, error, tostring, rawloadstring, xpcall =
      pcall, rawset, type, error, tostring, loadstring, xpcall
for _, name in ipairs({'debug', 'python', 'dofile', 'loadfile', 'load', 'io', 'os',
                       'require', 'package', 'module', 'print', 'newproxy'}) do
  _G[name] = nil
end
-- Text only: Lua 5.1 does not verify bytecode, and crafted bytecode reads and
-- writes memory (CVE-2015-4335; Redis's Lua refuses binary chunks, so its
-- loadstring returns nil for one, as this one does).
local function text_only(s)
  return type(s) ~= 'string' or s:byte(1) ~= 27
end
loadstring = function(s, name)
  if not text_only(s) then return nil, 'binary chunks are not allowed' end
  return rawloadstring(s, name)
end

-- A failing redis.call raises the Python error (userdata); pcall gives its text,
-- as Redis's pcall gives an error table's err field.
local function errtext(e)
  if type(e) == 'userdata' then return tostring(e) end
  if type(e) == 'table' and type(e.err) == 'string' then return e.err end
  return e
end
local function fix(ok, ...)
  if not ok then return false, errtext((...)) end
  return ok, ...
end
pcall = function(...) return fix(rawpcall(...)) end

-- redis.call/pcall are the Python functions themselves: called from the script
-- as C functions, so a "return redis.call(...)" keeps the script's frame (line).
redis = {REDIS_VERSION = '7.0.15', REDIS_VERSION_NUM = 0x0007000f, call = call, pcall = pcall_,
         LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
         REPL_NONE = 0, REPL_SLAVE = 1, REPL_REPLICA = 1, REPL_AOF = 2, REPL_ALL = 3}
redis.sha1hex = function(...)
  if select('#', ...) ~= 1 then error({err = 'ERR wrong number of arguments'}) end
  return sha1hex(tostring((...)))
end
redis.status_reply = function(...)
  if select('#', ...) ~= 1 or type((...)) ~= 'string' then
    return {err = 'ERR wrong number or type of arguments'}
  end
  return {ok = (...)}
end
redis.error_reply = function(...)
  if select('#', ...) ~= 1 or type((...)) ~= 'string' then
    return {err = 'ERR wrong number or type of arguments'}
  end
  local e = (...):gsub('^%-', '')
  local code, msg = e:match('^(%S*) (.*)$')
  if not code then code, msg = 'ERR', e end
  return {err = code .. ' ' .. msg:gsub('[\\r\\n]+$', '')}
end
redis.log = function() end
redis.set_repl = function() end
redis.replicate_commands = function() return true end
redis.breakpoint = function() return false end
redis.debug = function() end

local running = false   -- the _G guards and the time limit act only while a script runs

local function handler(err)   -- Redis's __redis__err__handler
  running = false
  local level, info = 2, nil
  repeat
    info = getinfo(level, 'Sl')
    level = level + 1
  until not info or info.source == '@user_script'
  if type(err) == 'userdata' then
    err = {err = tostring(err)}
  elseif type(err) ~= 'table' then
    err = {err = 'ERR ' .. tostring(err)}
  end
  if info then err.source, err.line = info.source, info.currentline end
  return err
end

local function hook()
  if running and expired() then
    sethook(hook, '', 1)   -- again at once: a pcall in the script cannot swallow it
    error({err = 'KILLED'})
  end
end

local function run(fn, nkeys, ...)
  local args, keys, argv = {...}, {}, {}
  for i = 1, nkeys do keys[i] = args[i] end
  for i = nkeys + 1, #args do argv[i - nkeys] = args[i] end
  rawset(_G, 'KEYS', keys)
  rawset(_G, 'ARGV', argv)
  running = true
  sethook(hook, '', 100000)
  local ok, res = xpcall(function() local r = fn() running = false return r end, handler)
  running = false
  sethook()
  return ok, res
end

local function compile(body)
  if not text_only(body) then return false, 'binary chunks are not allowed' end
  local fn, err = rawloadstring(body, '@user_script')
  return fn or false, err or false
end

setmetatable(_G, {
  __index = function(_, k)
    if not running then return nil end
    error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
  end,
  __newindex = function(t, k, v)
    if not running then return rawset(t, k, v) end
    error('Attempt to modify a readonly table', 2)
  end,
})
return compile, run, rawget
"""


def sha1hex(body: bytes) -> bytes:
    """The script's id: SHA-1 of ``body``, 40 lowercase hex digits (bytes)."""
    return hashlib.sha1(body).hexdigest().encode()


SHEBANG_FLAGS = {b"no-writes", b"allow-oom", b"allow-stale", b"no-cluster",
                 b"allow-cross-slot-keys"}


def _shebang(body: bytes) -> tuple:
    """(the body Lua compiles, read-only): a ``#!lua [flags=a,b]`` first line
    is blanked, its line feed kept so line numbers stay; ``flags=no-writes``
    makes the script read-only. RespError for another engine or flag. Redis's
    ``evalExtractShebangFlags`` (eval.c)."""
    if not body.startswith(b"#!"):
        return body, False
    end = body.find(b"\n")
    if end < 0:
        raise RespError("ERR Invalid script shebang")
    parts = body[:end].split()
    if parts[0] != b"#!lua":
        raise RespError(b"ERR Unexpected engine in script shebang: " + parts[0])
    flags = set()
    for part in parts[1:]:
        if not part.startswith(b"flags="):
            raise RespError(b"ERR Unknown lua shebang option: " + part)
        flags.update(f for f in part[6:].split(b",") if f)
    for flag in flags - SHEBANG_FLAGS:
        raise RespError(b"ERR Unexpected flag in script shebang: " + flag)
    return body[end:], b"no-writes" in flags


class CallError(Exception):
    """A failing redis.call: Lua sees an error whose text is the reply's."""


class Scripts:
    """One server process's Lua state: the runtime, the compiled scripts
    (sha -> Lua function) and the run in progress. Made on first use
    (:func:`scripts`); raises RespError when lupa is not installed."""

    def __init__(self):
        try:
            from lupa import lua51
        except ImportError:
            raise RespError("ERR scripting needs lupa: pip install 'fusedb[server]'") from None
        self.lua = lua51.LuaRuntime(encoding=None, register_eval=False, register_builtins=False,
                                    unpack_returned_tuples=True, max_memory=256 << 20,
                                    attribute_filter=self._no_attributes)
        self.table, self.dispatch = TABLE, dispatch
        self.lua_type = lua51.lua_type
        self.LuaError = lua51.LuaError
        self.compile_lua, self.runner, self.rawget = self.lua.execute(
            PRELUDE, self._call, self._pcall, self._expired, sha1hex)
        self.functions: dict[bytes, object] = {}
        self.ctx = None
        self.pending: BaseException | None = None
        self.killed = False
        self.readonly = False
        self.deadline = 0.0

    @staticmethod
    def _no_attributes(obj, name, is_setting):
        raise AttributeError("no Python attributes from a script")

    def compile(self, body: bytes, sha: bytes) -> tuple:
        """(the Lua function of ``body``, whether its shebang makes it
        read-only), cached by sha; RespError if it does not compile:
        ``ERR Error compiling script (new function): ...``."""
        fn = self.functions.get(sha)
        if fn is None:
            source, readonly = _shebang(body)
            lua_fn, msg = self.compile_lua(source)
            if not lua_fn:
                raise RespError(b"ERR Error compiling script (new function): " + msg)
            fn = self.functions[sha] = (lua_fn, readonly)
        return fn

    # -- the run -------------------------------------------------------------------

    def run(self, ctx, sha: bytes, compiled: tuple, nkeys: int, args: list,
            readonly: bool) -> object:
        """Run the compiled script (:meth:`compile`) with KEYS = args[:nkeys],
        ARGV = the rest, in one transaction over the KEYS (``ctx.atomic``);
        returns the reply value. ``readonly``: EVAL_RO (write commands fail)."""
        limit = float(ctx.server.config.get("lua-time-limit", 5000)) / 1000.0
        fn, readonly = compiled[0], readonly or compiled[1]

        def attempt(tx):
            saved = ctx.store, ctx.resp
            ctx.store, ctx.resp = tx, 2
            self.ctx, self.pending, self.killed, self.readonly = ctx, None, False, readonly
            self.deadline = time.monotonic() + limit
            try:
                ok, res = self.runner(fn, nkeys, *args)
            except self.LuaError as exc:   # out of memory outside the script's pcall
                ok, res = False, str(exc).encode()
            finally:
                ctx.store, ctx.resp = saved
                self.ctx = None
            pending, self.pending = self.pending, None
            if pending is not None:
                raise pending       # Retry (transact reruns us), or what must end the process
            if self.killed:
                raise RespError(KILLED)
            return self._result(ok, res, sha)

        return atomic(ctx, attempt, args[:nkeys])

    def _expired(self) -> bool:
        if time.monotonic() > self.deadline:
            self.killed = True
        return self.killed

    def _call(self, *args):
        """redis.call: the reply as a Lua value; a failure raises CallError,
        which Lua sees as an error (its text the reply's)."""
        failed, value = self._command(args)
        if failed:
            raise CallError(value.decode("latin-1"))
        return value

    def _pcall(self, *args):
        """redis.pcall: the reply as a Lua value, a failure as ``{err=...}``."""
        failed, value = self._command(args)
        return self.lua.table_from({b"err": value}) if failed else value

    def _command(self, args: tuple) -> tuple:
        """Run one command for the script: (failed, Lua value or error text).
        Whatever the command raises (Retry, ClosedError) is remembered in
        ``pending``, re-raised once Lua returns; the script sees an error."""
        if self.pending is not None:
            return True, b"ERR script interrupted"
        try:
            if self.ctx is None:
                return True, b"ERR redis.call/pcall can only be called inside a script invocation"
            if not args:
                return True, b"ERR Please specify at least one argument for this redis lib call"
            argv = []
            for a in args:
                if isinstance(a, bytes):
                    argv.append(a)
                elif isinstance(a, (int, float)) and not isinstance(a, bool):
                    argv.append(b"%.17g" % a)
                else:
                    return True, b"ERR Lua redis lib command arguments must be strings or integers"
            spec = self.table.get(argv[0].lower())
            subcommands = getattr(spec, "subcommands", None)
            if subcommands is not None and len(argv) > 1:   # a container: CLIENT, SCRIPT, ...
                spec = subcommands.get(argv[1].lower())
            if spec is None:
                return True, b"ERR Unknown Redis command called from script"
            if (spec.arity > 0 and spec.arity != len(argv)) or len(argv) < -spec.arity:
                return True, b"ERR Wrong number of args calling Redis command from script"
            if "noscript" in spec.flags:
                return True, b"ERR This Redis command is not allowed from script"
            if self.readonly and "write" in spec.flags:
                return True, b"ERR Write commands are not allowed from read-only scripts."
            reply = self.dispatch(self.ctx, argv)
            if isinstance(reply, Err):
                return True, bytes(reply)
            return False, self._to_lua(reply)
        except BaseException as exc:   # noqa: BLE001 - re-raised when Lua returns
            self.pending = exc
            return True, b"ERR script interrupted"

    # -- conversions -----------------------------------------------------------------

    def _to_lua(self, value):
        """A reply value as Redis gives it to a script (RESP2 rules)."""
        if value is None:
            return False
        if isinstance(value, Status):
            return self.lua.table_from({b"ok": bytes(value)})
        if isinstance(value, Err):
            return self.lua.table_from({b"err": bytes(value)})
        if isinstance(value, bytes):
            return bytes(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return b"%.17g" % value
        if isinstance(value, Map):
            value = [x for kv in value.items() for x in kv]
        return self.lua.table_from([self._to_lua(v) for v in value])

    def _from_lua(self, value):
        """The script's result as a reply value (Redis's luaReplyToRedisReply)."""
        if value is None or value is False:
            return None
        if value is True:
            return 1
        if isinstance(value, bytes):
            return value
        if isinstance(value, int | float):
            try:
                return int(value)           # truncated, as C's (long long) cast
            except (OverflowError, ValueError):
                return -(1 << 63)           # inf, nan: what the cast gives on x86-64
        if self.lua_type(value) != "table":
            return None
        err = self._field(value, b"err")
        if isinstance(err, bytes):
            return Err(err.replace(b"\r", b" ").replace(b"\n", b" "))
        ok = self._field(value, b"ok")
        if isinstance(ok, bytes):
            return Status(ok.replace(b"\r", b" ").replace(b"\n", b" "))
        out, i = [], 1
        while (item := self._field(value, i)) is not None:
            out.append(self._from_lua(item))
            i += 1
        return out

    def _field(self, table, key):
        """``table[key]`` without its metatable (rawget: _G's raises)."""
        return self.rawget(table, key)

    def _result(self, ok, res, sha: bytes):
        if ok:
            return self._from_lua(res)
        if self.lua_type(res) != "table":
            text = res if isinstance(res, bytes) else b"execution failure"
            return Err(b"ERR Error running script %s, %s" % (sha, text[:100]))
        msg = self._field(res, b"err")
        msg = msg if isinstance(msg, bytes) else b"ERR (null)"
        source, line = self._field(res, b"source"), self._field(res, b"line")
        if isinstance(source, bytes) and line is not None:
            msg += b" script: %s, on %s:%d." % (sha, source, int(line))
        return Err(msg.replace(b"\r", b" ").replace(b"\n", b" "))
