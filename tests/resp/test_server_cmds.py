"""Server commands against real Redis 7.0.15 and the FuseDB daemon, RESP2 and
RESP3 (the ``target`` fixture): CLIENT, COMMAND, CONFIG GET, INFO (parsed by
redis-py's ``info()``), TIME. What FuseDB does differently on purpose
(CLIENT SETINFO, which Redis 7.0 lacks; CONFIG SET; its INFO fields) is
asserted against FuseDB only (``fdb``)."""

from __future__ import annotations

import time

import pytest
import redis
from resp.cmd_helpers import err, fusedb_client_fixture, raw

fdb = fusedb_client_fixture()


def test_client_name_and_id(target):
    r = raw(target)
    assert r.execute_command("CLIENT", "GETNAME") is None
    assert r.execute_command("CLIENT", "SETNAME", "worker-1") == b"OK"
    assert r.execute_command("CLIENT", "GETNAME") == b"worker-1"
    assert err(r, "CLIENT", "SETNAME", "a b") == \
        "Client names cannot contain spaces, newlines or special characters."
    assert err(r, "CLIENT", "SETNAME", "a\nb") == \
        "Client names cannot contain spaces, newlines or special characters."
    assert err(r, "CLIENT", "SETNAME", "a", "b") == \
        "wrong number of arguments for 'client|setname' command"
    assert r.execute_command("CLIENT", "SETNAME", "") == b"OK"
    assert r.execute_command("CLIENT", "GETNAME") is None
    cid = r.execute_command("CLIENT", "ID")
    assert isinstance(cid, int) and cid > 0
    assert target.r.client_setname("x") is True
    assert target.r.client_getname() == ("x" if target.protocol == 2 else b"x")


def test_client_errors(target):
    r = raw(target)
    assert err(r, "CLIENT") == "wrong number of arguments for 'client' command"
    assert err(r, "CLIENT", "foo") == "unknown subcommand 'foo'. Try CLIENT HELP."
    assert err(r, "client", "MAINT_NOTIFICATIONS", "on") == \
        "unknown subcommand 'MAINT_NOTIFICATIONS'. Try CLIENT HELP."
    assert err(r, "CLIENT", "GETNAME", "x") == \
        "wrong number of arguments for 'client|getname' command"
    assert err(r, "CLIENT", "KILL") == "wrong number of arguments for 'client|kill' command"
    assert err(r, "CLIENT", "KILL", "1.2.3.4:5") == "No such client"
    assert err(r, "CLIENT", "KILL", "ID", "0") == "client-id should be greater than 0"
    assert err(r, "CLIENT", "KILL", "ID", "abc") == "client-id should be greater than 0"
    assert err(r, "CLIENT", "KILL", "TYPE", "foo") == "Unknown client type 'foo'"
    assert err(r, "CLIENT", "KILL", "SKIPME", "maybe") == "syntax error"
    assert err(r, "CLIENT", "KILL", "foo", "bar") == "syntax error"
    assert err(r, "CLIENT", "LIST", "TYPE", "foo") == "Unknown client type 'foo'"
    assert err(r, "CLIENT", "LIST", "ID", "abc") == "Invalid client ID"
    assert err(r, "CLIENT", "LIST", "foo") == "syntax error"
    assert r.execute_command("CLIENT", "KILL", "ID", "999999999") == 0


def test_client_list_info_kill(target):
    me, other = target.client(), target.client()
    me.client_setname("me")
    other.client_setname("other")
    my_id, other_id = me.client_id(), other.client_id()
    mine = me.client_list(client_id=[my_id])
    assert len(mine) == 1 and mine[0]["name"] == "me" and mine[0]["id"] == str(my_id)
    assert me.client_info()["name"] == "me"
    assert me.client_list(_type="pubsub") == []
    # the other connection is listed (same server process: its pool connection
    # and ours may be on different FuseDB server processes, so look it up by ID
    # from its own side too)
    assert other.client_list(client_id=[other_id])[0]["name"] == "other"
    assert me.execute_command("CLIENT", "KILL", "ID", my_id, "SKIPME", "yes") == 0
    killed = other.execute_command("CLIENT", "KILL", "ID", other_id, "SKIPME", "no")
    assert killed == 1
    # the killed connection is closed; redis-py reconnects on the next command
    assert other.ping() is True
    assert other.client_id() != other_id


@pytest.mark.parametrize("container", ["CLIENT", "CONFIG", "COMMAND"])
def test_help_of_containers(target, container):
    lines = raw(target).execute_command(container, "HELP")
    assert lines[0] == container.encode() + \
        b" <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    assert lines[-2:] == [b"HELP", b"    Prints this help."]
    assert any(line.startswith(b"GET") for line in lines) or container != "CONFIG"


def test_command_count_info_docs(target):
    r = raw(target)
    n = r.execute_command("COMMAND", "COUNT")
    assert isinstance(n, int) and n >= 40
    [get] = r.execute_command("COMMAND", "INFO", "get")
    assert get[0] == b"get" and get[1] == 2 and get[3:6] == [1, 1, 1]
    [mset, nothing] = r.execute_command("COMMAND", "INFO", "MSET", "nosuchcommand")
    assert mset[1] == -3 and mset[3:6] == [1, -1, 2] and nothing is None
    docs = r.execute_command("COMMAND", "DOCS", "get")
    if target.protocol == 2:
        docs = dict(zip(docs[::2], docs[1::2]))
    assert list(docs) == [b"get"]
    assert err(r, "COMMAND", "foo") == "unknown subcommand 'foo'. Try COMMAND HELP."
    assert err(r, "COMMAND", "COUNT", "x") == \
        "wrong number of arguments for 'command|count' command"
    assert "set" in target.r.command()


def test_config_get(target):
    r = target.r
    assert r.config_get("save") == {"save": ""}
    assert r.config_get("appendonly")["appendonly"] in ("yes", "no")
    assert r.config_get("nosuchparameter") == {}
    both = raw(target).execute_command("CONFIG", "GET", "save", "databases")
    if target.protocol == 2:
        both = dict(zip(both[::2], both[1::2]))
    assert set(both) == {b"save", b"databases"}
    assert set(r.config_get("maxclient*")) == {"maxclients"}
    with pytest.raises(redis.ResponseError):
        r.config_set("save", "x")
    assert err(raw(target), "CONFIG") == "wrong number of arguments for 'config' command"
    assert err(raw(target), "CONFIG", "foo") == "unknown subcommand 'foo'. Try CONFIG HELP."


def test_info_parsed_by_redis_py(target):
    r = target.r
    r.set("k", "v")
    info = r.info()
    assert info["redis_version"] == "7.0.15"
    assert info["connected_clients"] >= 1
    assert info["role"] == "master"
    if target.kind == "redis":      # FuseDB's count is cached: test_info_fusedb_fields
        assert info["db0"]["keys"] == 1
    assert set(r.info("server")) >= {"redis_version", "process_id", "uptime_in_seconds"}
    assert set(r.info("stats")) >= {"total_commands_processed", "instantaneous_ops_per_sec",
                                    "keyspace_hits", "keyspace_misses",
                                    "total_connections_received"}
    assert "used_memory" in r.info("memory")
    assert "aof_enabled" in r.info("persistence")
    assert r.info("nosuchsection") == {}
    assert "redis_version" in r.info("all") and "redis_version" in r.info("everything")
    assert set(r.info("server", "clients")) >= {"redis_version", "connected_clients"}


def test_info_keyspace_hits_and_misses(target):
    r = target.r
    r.set("k", "v")
    before = r.info("stats")
    assert r.get("k") == b"v"
    assert r.get("missing") is None
    assert r.mget("k", "missing", "k") == [b"v", None, b"v"]
    after = r.info("stats")
    assert after["keyspace_hits"] - before["keyspace_hits"] == 3
    assert after["keyspace_misses"] - before["keyspace_misses"] == 2
    assert after["total_commands_processed"] > before["total_commands_processed"]


def test_info_inside_multi(target):
    p = target.r.pipeline(transaction=True)
    p.set("k", "v")
    p.info()
    p.info("keyspace")
    _, info, keyspace = p.execute()
    assert info["redis_version"] == "7.0.15" and info["role"] == "master"
    if target.kind == "redis":      # FuseDB's count is cached: test_info_fusedb_fields
        assert keyspace["db0"]["keys"] == 1


def test_time(target):
    r = raw(target)
    sec, usec = r.execute_command("TIME")
    assert isinstance(sec, bytes) and isinstance(usec, bytes)
    assert abs(int(sec) + int(usec) / 1e6 - time.time()) < 5
    assert 0 <= int(usec) < 1_000_000
    assert abs(target.r.time()[0] - time.time()) < 5
    assert err(r, "TIME", "x") == "wrong number of arguments for 'time' command"


# -- FuseDB's documented deviations -------------------------------------------------------

def test_client_setinfo(fdb):
    """Redis 7.2's CLIENT SETINFO (7.0.15 lacks it; redis-py 8 sends it)."""
    assert fdb.execute_command("CLIENT", "SETINFO", "LIB-NAME", "mylib") == b"OK"
    assert fdb.execute_command("CLIENT", "SETINFO", "lib-ver", "1.2") == b"OK"
    line = fdb.execute_command("CLIENT", "INFO")
    line = line if isinstance(line, bytes) else line.encode()
    assert b" lib-name=mylib " in line and b" lib-ver=1.2 " in line
    assert b" fusedb-server=" in line
    assert err(fdb, "CLIENT", "SETINFO", "foo", "x") == "Unrecognized option 'foo'"
    assert err(fdb, "CLIENT", "SETINFO", "lib-name", "a b") == \
        "lib-name cannot contain spaces, newlines or special characters."


def test_config_set_is_refused(fdb):
    assert err(fdb, "CONFIG", "SET", "save", "") == \
        "CONFIG SET is not supported by FuseDB: set options with fusedb serve's flags"


def test_info_fusedb_fields(fusedb_server):
    r = fusedb_server.client(protocol=3)
    r.flushall()
    r.set("k", "v")
    info = r.info("all")
    assert info["fusedb_durability"] in ("sync", "interval", "none")
    assert info["shards"] >= 1 and info["leaves"] >= 1
    assert isinstance(info["shard0"], dict) and info["shard0"]["worker_pid"] > 0
    assert info["fusedb_wal_bytes"] >= 0 and info["fusedb_write_amplification"] >= 0
    assert info["cmdstat_set"]["calls"] >= 1
    assert info["server_processes"] >= 1
    time.sleep(1.1)                   # the key count is cached for 1 s
    assert r.info("keyspace")["db0"]["keys"] == 1
