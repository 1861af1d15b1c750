"""Starting the server processes, found trying it as a new user: ``--servers``
is bounded (4 per CPU: 100,000 processes once ran the host out of memory),
and a SIGTERM while they start stops everything at once, exit 0, instead of
waiting until every one is ready."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from fusedb.testing import fusedb_shm

from .conftest import fusedb_env, serve_command


def test_too_many_server_processes_is_refused(tmp_path):
    most = 4 * (os.cpu_count() or 1)
    r = subprocess.run(serve_command(str(tmp_path / "db"), "--unixsocket",
                                     str(tmp_path / "s.sock"), "--servers", str(most + 1)),
                       capture_output=True, text=True, timeout=60, env=fusedb_env())
    assert r.returncode == 2, r.stderr
    assert f"--servers {most + 1}: from 1 to {most}" in r.stderr
    assert "Traceback" not in r.stderr


def test_sigterm_while_the_server_processes_start_stops_at_once(tmp_path):
    path = str(tmp_path / "db")
    most = 4 * (os.cpu_count() or 1)
    p = subprocess.Popen(serve_command(path, "--unixsocket", str(tmp_path / "s.sock"),
                                       "--servers", str(most), "--log-level", "info"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=fusedb_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not any("fusedb.resp.process" in " ".join(c.cmdline())
                      for c in _children(p.pid)):
            assert time.monotonic() < deadline and p.poll() is None, "no server process"
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        out, _ = p.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    assert p.returncode == 0, out
    assert "Traceback" not in out
    # Sent as the first server process appeared (each needs ~0.4 s of imports
    # to be ready): serve never reported ready, it stopped starting.
    assert "serving " not in out and "while the redis server processes were starting" in out
    assert took < 15, f"{took:.1f} s"
    assert not os.path.exists(tmp_path / "s.sock")
    assert fusedb_shm(str(tmp_path)) == set()


def _children(pid: int) -> list:
    import psutil
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def test_a_password_over_4096_bytes_is_refused(tmp_path):
    pw = tmp_path / "pw"
    pw.write_bytes(b"x" * 70000 + b"\n")
    r = subprocess.run(serve_command(str(tmp_path / "db"), "--unixsocket",
                                     str(tmp_path / "s.sock"), "--requirepass-file", str(pw)),
                       capture_output=True, text=True, timeout=60, env=fusedb_env())
    assert r.returncode == 2 and "at most 4096" in r.stderr, r.stderr
