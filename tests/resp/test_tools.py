"""Redis's own tools against the daemon: redis-cli one-shot and piped
commands (their output compared with redis-server's), with a password, and
redis-benchmark without and with pipelining, after which the INCR total is
exact."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import start_fusedb

pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-cli") and shutil.which("redis-benchmark")),
    reason="redis-tools are not installed (.ci/run installs them)")

ONE_SHOTS = [
    ["ping"],
    ["ping", "hello world"],
    ["echo", "a\nb"],
    ["set", "k", "v"],
    ["get", "k"],
    ["get", "missing"],
    ["incr", "n"],
    ["incr", "k"],
    ["select", "0"],
    ["hello", "4"],
    ["auth", "x"],
]


def cli(server, *args: str, stdin: str | None = None, password: str | None = None) -> str:
    cmd = ["redis-cli", "-s", server.unixsocket]
    if password:
        cmd += ["-a", password, "--no-auth-warning"]
    r = subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


def test_redis_cli_one_shot_commands_print_what_they_print_for_redis(redis_server,
                                                                      fusedb_server):
    for server in (redis_server, fusedb_server):
        server.client().flushall()
    for args in ONE_SHOTS:
        assert cli(fusedb_server, *args) == cli(redis_server, *args), args


def test_redis_cli_piped_commands(redis_server, fusedb_server):
    script = "SET p 1\nINCR p\nGET p\nPING\n"
    assert cli(fusedb_server, stdin=script) == cli(redis_server, stdin=script)


def test_redis_cli_with_a_password(tmp_path):
    with start_fusedb(tmp_path, servers=1, password="s3cret") as server:
        assert cli(server, "ping", password="s3cret") == "PONG\n"
        assert "NOAUTH" in cli(server, "ping")
        assert "WRONGPASS" in cli(server, "ping", password="nope")


def benchmark(server, *args: str) -> str:
    r = subprocess.run(["redis-benchmark", "-s", server.unixsocket, "-q", *args],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "rror" not in out and "ERR" not in out, out
    return out


def test_redis_benchmark_runs_clean_and_counts_every_incr(tmp_path):
    """``redis-benchmark -t ping,set,get,incr -n 100000 -c 50``, then with
    ``-P 16``: exit 0, no error, and every INCR of both runs (all on the one
    key ``counter:__rand_int__``: no -r) is counted."""
    n = 100_000
    with start_fusedb(tmp_path, servers=2) as server:
        for extra in ([], ["-P", "16"]):
            out = benchmark(server, "-t", "ping,set,get,incr", "-n", str(n), "-c", "50", *extra)
            for test in ("PING_INLINE", "PING_MBULK", "SET", "GET", "INCR"):
                assert f"{test}: " in out, out
        assert server.client().get("counter:__rand_int__") == b"%d" % (2 * n)
