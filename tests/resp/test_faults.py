"""Faults under load, with real processes: SIGKILL of one server process
while redis-py clients in other processes INCR (they reconnect; nothing
acknowledged is lost; the supervisor replaces the process), and SIGKILL of
the whole daemon (serve, server processes, shard workers) in each durability
mode, then a restart: every acknowledged write is there (README, Durability:
a crash of processes alone loses nothing acknowledged, in every mode)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from .conftest import start_fusedb

CLIENT = os.path.join(os.path.dirname(__file__), "incr_client.py")
CLIENTS = 4


def start_clients(server, seconds: float) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, CLIENT, server.unixsocket, str(seconds),
                               str(i)], stdout=subprocess.PIPE, text=True)
             for i in range(CLIENTS)]
    for p in procs:
        assert p.stdout.readline() == "R\n"
    return procs


def results(procs: list[subprocess.Popen]) -> list[dict]:
    out = []
    for p in procs:
        line, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        out.append(json.loads(line))
    return out


def server_processes(serve_pid: int) -> list[psutil.Process]:
    """The live server processes of the daemon ``serve_pid``."""
    found = []
    for c in psutil.Process(serve_pid).children():
        try:
            if "fusedb.resp.process" in " ".join(c.cmdline()):
                found.append(c)
        except psutil.Error:        # exited (a zombie until the supervisor reaps it)
            pass
    return found


def busiest(serve_pid: int) -> psutil.Process:
    """The server process holding the most client connections."""
    def conns(p):
        try:
            return len(p.net_connections(kind="unix"))    # the listener and its clients
        except psutil.Error:
            return 0
    return max(server_processes(serve_pid), key=conns)


def assert_nothing_acknowledged_lost(r, got: list[dict]) -> None:
    acked = sum(g["acked"] for g in got)
    uncertain = sum(g["uncertain"] for g in got)
    counter = int(r.get("counter"))
    assert acked <= counter <= acked + uncertain, (counter, got)
    for cid, g in enumerate(got):
        last = int(r.get(f"last:{cid}") or 0)
        # the last acknowledged SET, or a later one whose reply was lost
        assert g["last_set"] <= last <= g["last_set"] + 1, (cid, last, g)


def test_sigkill_of_one_server_process_under_load(tmp_path):
    with start_fusedb(tmp_path, servers=2) as server:
        clients = start_clients(server, 6.0)
        time.sleep(1.5)
        before = {p.pid for p in server_processes(server.pid)}
        victim = busiest(server.pid)
        victim.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            now = {p.pid for p in server_processes(server.pid)}
            if len(now) == 2 and victim.pid not in now:
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.05)
        assert len(now - before) == 1
        got = results(clients)
        r = server.client()
        assert_nothing_acknowledged_lost(r, got)
        hit = [g for g in got if g["uncertain"] or g["reconnects"]]
        assert hit, f"no client was on the killed process: {got}"
        assert all(g["ok_after_error"] > 0 for g in hit), got


@pytest.mark.parametrize("durability", ["sync", "interval", "none"])
def test_sigkill_of_the_whole_daemon_then_a_restart_keeps_what_was_acknowledged(
        tmp_path, durability):
    flags = ("--durability", durability, "--shards", "2")
    with start_fusedb(tmp_path, *flags, servers=2) as server:
        clients = start_clients(server, 4.0)
        time.sleep(1.5)
        group = [server.pid] + [c.pid for c in psutil.Process(server.pid).children(True)]
        for pid in group:
            os.kill(pid, signal.SIGKILL)
        for pid in group:
            try:
                psutil.Process(pid).wait(30)
            except psutil.NoSuchProcess:
                pass
        server.proc.wait(30)
        got = results(clients)
    assert sum(g["acked"] for g in got) > 0
    with start_fusedb(tmp_path, *flags, servers=1) as server:
        assert_nothing_acknowledged_lost(server.client(), got)
