"""The command table and :func:`dispatch`: argv (a list of bytes) -> reply value.

Each command is a function ``fn(ctx, argv) -> reply`` (fusedb.resp.types says
what a reply value is), registered with :func:`command` by its module
(fusedb.resp.strings, .keys, .server_cmds, .multi, .scripting), with its
arity (Redis's convention: n exact, -n at least n, counting the name), its
flags and its key positions (first, last, step: Redis's COMMAND INFO), which
EXEC and EVAL use to lock the keys' shards. A command raises
fusedb.resp.types.RespError for an error reply; FuseDB's errors are mapped
by :func:`dispatch`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusedb.resp.state import Context
from fusedb.resp.types import Err, RespError


@dataclass(frozen=True)
class CommandSpec:
    """One command: ``name`` (lowercase bytes), ``fn``, ``arity``, ``flags``
    (a frozenset of str: "write", "readonly", "fast", "noauth" (allowed before
    AUTH), "nomulti" (run at once even inside MULTI: EXEC, DISCARD, MULTI,
    QUIT, RESET), "noscript" (refused inside a script)), ``keys`` (first,
    last, step; (0, 0, 0): no key; last -1: to the end)."""

    name: bytes
    fn: object
    arity: int
    flags: frozenset
    keys: tuple


#: name (lowercase bytes) -> CommandSpec
TABLE: dict[bytes, CommandSpec] = {}


def command(name: str, arity: int, flags: str = "", keys: tuple = (0, 0, 0)):
    """Decorator: register ``fn`` as the command ``name``."""
    def register(fn):
        TABLE[name.encode()] = CommandSpec(name.encode(), fn, arity, frozenset(flags.split()),
                                           keys)
        return fn
    return register


def key_args(spec: CommandSpec, argv: list) -> list:
    """The keys among ``argv`` by the spec's (first, last, step)."""
    first, last, step = spec.keys
    if not first:
        return []
    last = len(argv) + last if last < 0 else last
    return argv[first:last + 1:step]


def dispatch(ctx: Context, argv: list) -> object:
    """Run ``argv`` (a non-empty list of bytes) for the connection ``ctx``;
    returns the reply value (an error reply as types.Err). Never raises for a
    command's failure; raises only what must end the process (ClosedError:
    the daemon is gone)."""
    raise NotImplementedError   # the command table's owner writes it


def error_reply(exc: BaseException) -> Err:
    """The error reply for ``exc`` (a RespError, or a FuseDB error mapped to
    Redis's message for the same condition)."""
    if isinstance(exc, RespError):
        return exc.reply
    raise NotImplementedError   # the command table's owner writes it


# The command modules register their commands on import (one line each,
# alphabetical).
import fusedb.resp.multi  # noqa: E402, F401
import fusedb.resp.scripting  # noqa: E402, F401
