"""``fusedb stats PATH`` names the daemon's Redis protocol server processes
among the attached clients (they are clients of the daemon), in the table
and in ``--json`` (``resp_server``: the index, or null for any other client)."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import fusedb_env


def test_stats_names_the_server_processes(fusedb_server):
    run = [sys.executable, "-m", "fusedb", "stats", fusedb_server.path]
    out = subprocess.run(run + ["--json"], capture_output=True, text=True, timeout=60,
                         env=fusedb_env())
    assert out.returncode == 0, out.stderr
    clients = json.loads(out.stdout)["clients"]
    assert sorted(c["resp_server"] for c in clients if c["resp_server"] is not None) == [0, 1]
    assert [c for c in clients if c["resp_server"] is None], "the stats command itself"
    text = subprocess.run(run, capture_output=True, text=True, timeout=60, env=fusedb_env())
    assert text.returncode == 0, text.stderr
    assert text.stdout.count("(Redis protocol server process ") == 2
