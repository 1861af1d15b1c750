"""MULTI, EXEC, DISCARD: Redis transactions over ``db.transact``.

Redis's semantics (Redis 7.0.15 src/multi.c ``multiCommand``, ``execCommand``,
``discardCommand``, ``flagTransaction``; src/server.c ``processCommand``;
redis.io "Transactions"):

- MULTI opens a queue on the connection (``ctx.multi``). Every command but
  the "nomulti" ones (EXEC, DISCARD, MULTI, QUIT, RESET) is then queued by
  ``commands.dispatch`` with the reply ``+QUEUED``; an unknown command or a
  wrong number of arguments is refused at once and flags the transaction
  (``ctx.multi_failed``), so EXEC answers ``-EXECABORT`` and runs nothing.
- EXEC runs the queue in ONE ``db.transact`` over the keys of the queued
  commands (their key positions in the command table; EVAL's declared KEYS),
  so to every other client, in any server process, the commands happen at one
  instant. Each command runs through the command table against the
  transaction; a command's error is its element of EXEC's array, and, as in
  Redis, the commands before and after it still apply (no rollback). A
  command touching a key outside the locked shards makes the transaction rerun
  the whole queue with every shard locked (the queue has no effect outside
  the transaction, so a rerun is invisible).
- Crash atomicity is per shard: the writes are one WAL record per shard (see
  fusedb.api.transaction).
- WATCH / UNWATCH are not implemented (unknown command).
"""

from __future__ import annotations

from fusedb.resp.table import command, dispatch, key_args
from fusedb.resp.scripting import eval_keys
from fusedb.resp.types import OK, RespError

#: Commands whose keys are not at fixed positions: name -> keys(argv).
MOVABLE_KEYS = {b"eval": eval_keys, b"evalsha": eval_keys,
                b"eval_ro": eval_keys, b"evalsha_ro": eval_keys}


def queued_keys(queue: list) -> list:
    """Every key of the queued (spec, argv) pairs, in order, without duplicates."""
    keys = {}
    for spec, argv in queue:
        movable = MOVABLE_KEYS.get(spec.name)
        for key in (movable(argv) if movable else key_args(spec, argv)):
            keys[key] = None
    return list(keys)


@command("multi", 1, "nomulti noscript fast")
def multi_command(ctx, argv):
    if ctx.multi is not None:
        raise RespError("ERR MULTI calls can not be nested")
    ctx.multi, ctx.multi_failed = [], False
    return OK


@command("discard", 1, "nomulti noscript fast")
def discard_command(ctx, argv):
    if ctx.multi is None:
        raise RespError("ERR DISCARD without MULTI")
    ctx.multi, ctx.multi_failed = None, False
    return OK


@command("exec", 1, "nomulti noscript")
def exec_command(ctx, argv):
    if ctx.multi is None:
        raise RespError("ERR EXEC without MULTI")
    queue, failed = ctx.multi, ctx.multi_failed
    ctx.multi, ctx.multi_failed = None, False
    if failed:
        raise RespError("EXECABORT Transaction discarded because of previous errors.")
    if not queue:
        return []

    def run(tx):
        saved = ctx.store
        ctx.store = tx
        try:
            return [dispatch(ctx, queued) for _, queued in queue]
        finally:
            ctx.store = saved

    return ctx.atomic(run, queued_keys(queue))
