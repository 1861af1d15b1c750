"""Helpers of the command tests (test_strings, test_expire, test_keys,
test_server_cmds): replies as the server sent them, exact error texts, and a
FuseDB-only client for FuseDB's documented deviations."""

from __future__ import annotations

import pytest
import redis


def raw(target) -> redis.Redis:
    """A client of ``target``'s protocol that leaves replies as parsed (no
    redis-py response callbacks: OK is b"OK", INCRBYFLOAT bytes, ...)."""
    c = target.client()
    c.response_callbacks.clear()
    return c


def err(client: redis.Redis, *args) -> str:
    """The error text of the command ``args`` (redis-py drops the ``ERR ``
    code); fails if the command succeeds."""
    with pytest.raises(redis.ResponseError) as e:
        client.execute_command(*args)
    return str(e.value)


def fusedb_client_fixture():
    """A fixture (assign it to a name in the test module): a raw client of
    the module's FuseDB daemon, RESP 2 and 3, on a flushed database. For
    tests of FuseDB's documented deviations, which real Redis would fail by
    design."""
    @pytest.fixture(params=[2, 3], ids=["fusedb-2", "fusedb-3"])
    def fdb(request, fusedb_server):
        c = fusedb_server.client(protocol=request.param)
        c.response_callbacks.clear()
        c.flushall()
        yield c
        c.close()
    return fdb
