"""``fusedb serve``, ``fusedb stop``, ``fusedb stats`` and
``fusedb.connect(path, start=True)`` with real processes: the start race, the
daemon killed (SIGKILL) or stopped (SIGTERM) under load, a second serve, stop
and stats against live and dead daemons, systemd readiness. Every wait is
bounded; every daemon a test starts is stopped by its pid (conftest's leak check
fails a test that leaves one, or its shared memory)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

import fusedb
from fusedb.tools.control import owner

from crash_child import OPTIONS
from crash_ops import expect, last_acked, settle

HERE = os.path.dirname(__file__)
CRASH_CHILD = os.path.join(HERE, "crash_child.py")
RACE_CHILD = os.path.join(HERE, "daemon_child.py")


def cli(*args: str, timeout: float = 120.0, env: dict | None = None):
    """Run ``python -m fusedb ARGS``; the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "fusedb", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def daemon_pid(path: str) -> int:
    own = owner(path)
    assert own is not None and own[0] == own[1], f"no daemon owns {path}: {own}"
    return own[1]


def serve_detached(path: str, *flags: str) -> int:
    """Start a detached daemon; its pid once it is ready."""
    r = cli("serve", path, "--detach", *flags)
    assert r.returncode == 0, r.stderr
    return daemon_pid(path)


def kill_daemon(path: str, pid: int) -> None:
    """SIGKILL the daemon ``pid`` of ``path``; return once its orphaned workers
    have written their WAL rings out and exited."""
    workers = [w["pid"] for w in json.loads(cli("stats", path, "--json").stdout)["workers"]]
    os.kill(pid, signal.SIGKILL)
    for w in workers:
        try:
            psutil.Process(w).wait(20)
        except psutil.NoSuchProcess:
            pass


def stop(path: str) -> None:
    r = cli("stop", path)
    assert r.returncode == 0, r.stderr


def serve_processes(path: str) -> list[int]:
    """Pids of live ``fusedb serve`` processes of ``path``."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if "serve" in cmd and path in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p.pid)
    return found


def test_eight_processes_starting_at_once_make_one_daemon(tmp_path):
    path = str(tmp_path / "db")
    at = time.time() + 1.5            # after every interpreter has started
    n = 300
    kids = [subprocess.Popen([sys.executable, RACE_CHILD, path, str(at), str(n)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(8)]
    try:
        outs = [k.communicate(timeout=120) for k in kids]
    finally:
        for k in kids:
            k.kill()
    assert [k.returncode for k in kids] == [0] * 8, [o[1][-2000:] for o in outs]
    pids = {int(o[0]) for o in outs}
    assert len(pids) == 1, f"the processes attached to different daemons: {pids}"
    assert serve_processes(path) == list(pids)
    with fusedb.connect(path) as db:
        assert db.get(b"c") == b"%d" % (8 * n)
    stop(path)
    assert not serve_processes(path)


def test_connect_start_attaches_to_a_running_daemon_and_passes_options(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.connect(path, start=True, shards=3, durability="sync") as db:
        pid = daemon_pid(path)
        assert len(db.stats()["workers"]) == 3
        db.put(b"k", b"v")
    # The daemon outlives the process that started it; a second start attaches.
    with fusedb.connect(path, start=True, shards=1) as db:
        assert daemon_pid(path) == pid
        assert db.get(b"k") == b"v"
        assert len(db.stats()["workers"]) == 3      # the running daemon's own options
    stop(path)


def test_connect_start_warns_when_the_running_daemon_has_other_options(tmp_path, caplog):
    """A daemon outlives its applications: options given to a later
    connect(start=True) cannot apply. They are still checked (a bad one is
    refused), and the ones that differ are named in a warning."""
    path = str(tmp_path / "db")
    fusedb.connect(path, start=True, shards=1).close()
    try:
        with caplog.at_level("WARNING", logger="fusedb"):
            fusedb.connect(path, start=True, shards=1).close()
            assert not [r for r in caplog.records if "running daemon" in r.getMessage()]
            fusedb.connect(path, start=True, shards=2, max_value_size=65536,
                           durability="interval").close()
        (msg,) = [r.getMessage() for r in caplog.records if "running daemon" in r.getMessage()]
        assert "max_value_size=16384, shards=1" in msg
        assert "max_value_size=65536, shards=2" in msg and "durability" not in msg
        with pytest.raises(fusedb.InvalidArgumentError, match="shardz"):
            fusedb.connect(path, start=True, shardz=2)
    finally:
        stop(path)


def test_daemon_killed_under_load_loses_nothing_acknowledged(tmp_path):
    """SIGKILL the daemon while a client writes (then the client); ``serve``
    again recovers every acknowledged write (twice over)."""
    path = str(tmp_path / "db")
    seed, m, start = 5, {}, 0
    for _ in range(2):
        pid = serve_detached(path, "--options", json.dumps(OPTIONS))
        c = subprocess.Popen([sys.executable, CRASH_CHILD, path, "interval", str(seed),
                              str(start), "client"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        assert c.stdout.read(1) == b"R"
        time.sleep(0.4)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        c.kill()
        c.wait(10)
        last = last_acked(c, start)
        after, in_flight = expect(seed, m, start, last)
        serve_detached(path, "--options", json.dumps(OPTIONS))   # recovers
        with fusedb.connect(path) as db:
            got = dict(db.scan())
        stop(path)
        m, start = settle(got, after, in_flight, last)
    assert start > 20


def test_sigterm_under_load_exits_cleanly(tmp_path):
    """SIGTERM to a foreground daemon with two clients writing: it exits 0 within
    a bound, the clients get ClosedError, nothing is left in /dev/shm (conftest),
    and every acknowledged write is there after the next start."""
    path = str(tmp_path / "db")
    d = subprocess.Popen([sys.executable, "-m", "fusedb", "serve", path,
                          "--options", json.dumps(OPTIONS)],
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while owner(path) is None or not owner(path)[1]:
            assert d.poll() is None and time.monotonic() < deadline, d.stderr.read()
            time.sleep(0.05)
        # Unbuffered: read(1) takes the ready byte only; communicate() reads the rest.
        clients = [subprocess.Popen([sys.executable, CRASH_CHILD, path, "interval", "3",
                                     "0", "client", str(c)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, bufsize=0) for c in range(2)]
        for c in clients:
            assert c.stdout.read(1) == b"R"
        time.sleep(0.5)
        t = time.monotonic()
        d.send_signal(signal.SIGTERM)
        assert d.wait(60) == 0
        took = time.monotonic() - t
        log = d.stderr.read()
    finally:
        if d.poll() is None:
            d.kill()
            d.wait()
    assert "stopped cleanly" in log, log
    assert took < 30, f"SIGTERM took {took:.1f} s"
    lasts = []
    for c in clients:
        # communicate: a client blocked on a full stdout pipe would never see the close.
        out, err = c.communicate(timeout=60)
        assert b"ClosedError" in err, err[-2000:]
        lasts.append(last_acked(SimpleNamespace(stdout=io.BytesIO(out)), 0))
    serve_detached(path)
    with fusedb.connect(path) as db:
        got = dict(db.scan())
    stop(path)
    for no, last in enumerate(lasts):
        after, in_flight = expect(3, {}, 0, last, no)
        mine = {k: v for k, v in got.items() if k in after or k in in_flight}
        settle(mine, after, in_flight, last)


def test_a_second_serve_is_refused(tmp_path):
    path = str(tmp_path / "db")
    pid = serve_detached(path)
    try:
        r = cli("serve", path)
        assert r.returncode == 1
        assert f"refused: {path} is already open by pid {pid} (a fusedb serve daemon)" \
            in r.stderr
        assert "Traceback" not in r.stderr
        r = cli("serve", path, "--detach")
        assert r.returncode == 1 and "refused" in r.stderr and "Traceback" not in r.stderr
        assert cli("serve", path, "--detach", "--if-not-running").returncode == 0
        assert serve_processes(path) == [pid]
    finally:
        stop(path)


def test_stop_and_stats_against_live_and_dead_daemons(tmp_path):
    path = str(tmp_path / "db")
    r = cli("stats", path)
    assert r.returncode == 1 and "no database is open" in r.stderr
    r = cli("stop", path)
    assert r.returncode == 1 and "no daemon is running" in r.stderr
    pid = serve_detached(path, "--shards", "2")
    with fusedb.connect(path) as db:
        db.incr(b"n", 5)
        r = cli("stats", path)
        assert r.returncode == 0, r.stderr
        assert f"daemon_pid             {pid}" in r.stdout
        assert r.stdout.count("worker: shard") == 2
        s = json.loads(cli("stats", path, "--json").stdout)
        assert s["daemon_pid"] == pid and len(s["workers"]) == 2
        assert s["logical_bytes_written"] > 0
    r = cli("stop", path)
    assert r.returncode == 0 and f"pid {pid}" in r.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    r = cli("stop", path)
    assert r.returncode == 1
    # A dead daemon: killed, its workers gone too; stop and stats say so, and
    # serve recovers.
    pid = serve_detached(path)
    kill_daemon(path, pid)
    r = cli("stop", path)
    assert r.returncode == 1 and f"pid {pid}, died without closing" in r.stderr
    r = cli("stats", path)
    assert r.returncode == 1 and "is gone" in r.stderr
    serve_detached(path)
    with fusedb.connect(path) as db:
        assert db.get(b"n") == b"5"
    stop(path)


def test_stop_refuses_a_database_its_process_opened_itself(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.open(path, shards=1):
        r = cli("stop", path)
        assert r.returncode == 3
        assert f"open by pid {os.getpid()}, a process that called fusedb.open" in r.stderr


def test_readiness_is_notified_to_systemd(tmp_path):
    """With NOTIFY_SOCKET set (as systemd's Type=notify does), serve sends
    READY=1 once attachable and STOPPING=1 on SIGTERM."""
    path = str(tmp_path / "db")
    sock_path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    d = subprocess.Popen([sys.executable, "-m", "fusedb", "serve", path],
                         env=dict(os.environ, NOTIFY_SOCKET=sock_path),
                         stderr=subprocess.DEVNULL)
    try:
        ready = sock.recv(4096).decode()
        assert "READY=1" in ready.splitlines() and f"MAINPID={d.pid}" in ready
        with fusedb.connect(path) as db:          # attachable once READY=1 came
            db.put(b"k", b"v")
        d.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert d.wait(60) == 0
    finally:
        sock.close()
        if d.poll() is None:
            d.kill()
            d.wait()


def test_connect_start_refuses_an_embedded_database_at_once(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.open(path):
        t = time.monotonic()
        with pytest.raises(fusedb.NotRunningError, match="embedded mode"):
            fusedb.connect(path, start=True)
        assert time.monotonic() - t < 30
    assert not serve_processes(path)


def test_connect_start_reports_why_the_daemon_could_not_start(tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("not a database")
    with pytest.raises(fusedb.NotRunningError, match="is not a FuseDB database"):
        fusedb.connect(str(foreign), start=True)
    assert sorted(os.listdir(foreign)) == ["todo.txt"]      # nothing written into it
    with pytest.raises(fusedb.InvalidArgumentError, match="durability"):
        fusedb.connect(str(tmp_path / "db"), start=True, durability="never")
    with pytest.raises(fusedb.InvalidArgumentError, match="start=True"):
        fusedb.connect(str(tmp_path / "db"), shards=2)
    assert not os.path.exists(tmp_path / "db")


def test_serve_usage_errors_exit_2_without_traceback(tmp_path):
    r = cli("serve", str(tmp_path / "db"), "--options", '{"shards": 0}')
    assert r.returncode == 2 and "Traceback" not in r.stderr and "shards" in r.stderr
    cfg = tmp_path / "fusedb.toml"
    cfg.write_text('durability = "sometimes"\n')
    r = cli("serve", str(tmp_path / "db"), "--config", str(cfg))
    assert r.returncode == 2 and "durability" in r.stderr and "Traceback" not in r.stderr


def test_config_file_options_reach_the_daemon(tmp_path):
    path = str(tmp_path / "db")
    cfg = tmp_path / "fusedb.toml"
    cfg.write_text('shards = 3\ndurability = "sync"\n')
    serve_detached(path, "--config", str(cfg), "--durability", "none")
    try:
        with fusedb.connect(path) as db:
            assert len(db.stats()["workers"]) == 3
            assert db._store.opts.durability == "none"       # the flag wins over the file
    finally:
        stop(path)


def test_ctrl_c_stops_a_foreground_daemon_and_its_pidfile_goes(tmp_path):
    path = str(tmp_path / "db")
    pidfile = tmp_path / "run" / "fusedb.pid"
    pidfile.parent.mkdir()
    d = subprocess.Popen([sys.executable, "-m", "fusedb", "serve", path, "--pidfile",
                          str(pidfile)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists():
            assert d.poll() is None and time.monotonic() < deadline, d.stderr.read()
            time.sleep(0.05)
        assert int(pidfile.read_text()) == d.pid == daemon_pid(path)
        d.send_signal(signal.SIGINT)
        assert d.wait(60) == 0
        log = d.stderr.read()
    finally:
        if d.poll() is None:
            d.kill()
            d.wait()
    assert "SIGINT: stopping" in log and "stopped cleanly" in log
    assert "Traceback" not in log
    assert not pidfile.exists()


def test_a_dead_worker_of_the_daemon_is_restarted(tmp_path):
    path = str(tmp_path / "db")
    serve_detached(path, "--shards", "2")
    try:
        with fusedb.connect(path) as db:
            for i in range(200):
                db.put(b"k%d" % i, b"v")
            old = db.stats()["workers"][0]["pid"]
            os.kill(old, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while db.stats()["workers"][0]["pid"] in (old, 0):
                assert time.monotonic() < deadline, "the worker was not restarted"
                time.sleep(0.05)
            for i in range(200, 400):
                db.put(b"k%d" % i, b"v")
            db.flush()
            assert len(dict(db.scan())) == 400
    finally:
        stop(path)


def test_a_hang_up_of_the_process_group_stops_the_daemon_cleanly(tmp_path):
    """SIGHUP to the whole process group (a closed terminal): the workers ignore
    it, the daemon closes cleanly and exits 0."""
    path = str(tmp_path / "db")
    d = subprocess.Popen([sys.executable, "-m", "fusedb", "serve", path],
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while owner(path) is None or not owner(path)[1]:
            assert d.poll() is None and time.monotonic() < deadline, d.stderr.read()
            time.sleep(0.05)
        with fusedb.connect(path) as db:
            db.incr(b"n", 7)
        os.killpg(d.pid, signal.SIGHUP)
        assert d.wait(60) == 0
        log = d.stderr.read()
    finally:
        if d.poll() is None:
            os.killpg(d.pid, signal.SIGKILL)
            d.wait()
    assert "SIGHUP: stopping" in log and "stopped cleanly" in log, log
    assert "restarting" not in log and "exited with code" not in log, log
    with fusedb.open(path) as db:
        assert db.get(b"n") == b"7"


def test_bad_options_and_paths_are_refused_with_a_message(tmp_path):
    """Unknown options, a config that is not a table of options, a path that is
    a file, an unwritable pid file: a one-line message, no traceback, nothing
    created."""
    cfg = tmp_path / "fusedb.toml"
    cfg.write_text("[fusedb]\nshards = 2\n")
    afile = tmp_path / "afile"
    afile.write_text("hi")
    db = str(tmp_path / "db")
    cases = [
        (["serve", db, "--options", '{"bogus": 1}'], 2, "unknown option(s) bogus"),
        (["serve", db, "--options", "[1]"], 2, "not list"),
        (["serve", db, "--options", '{"mode": "embedded"}'], 2, "runs multiprocess"),
        (["serve", db, "--config", str(cfg)], 2, "unknown option(s) fusedb"),
        (["serve", db, "--pidfile", str(tmp_path / "no" / "x.pid")], 2,
         "is not a writable directory"),
        (["serve", str(afile)], 1, "is not a directory"),
        (["serve", str(afile), "--detach"], 1, "is not a directory"),
    ]
    for args, code, message in cases:
        r = cli(*args)
        assert (r.returncode, "Traceback") == (code, "Traceback") and message in r.stderr, \
            (args, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr, (args, r.stderr)
    assert not os.path.exists(db)
    with pytest.raises(fusedb.InvalidArgumentError, match="unknown option"):
        fusedb.connect(db, start=True, bogus=1)
    with pytest.raises(fusedb.NotRunningError, match="is not a directory"):
        fusedb.connect(str(afile), start=True)


def test_a_starter_that_gives_up_leaves_the_daemon_serving(tmp_path):
    """The process that started a daemon is interrupted (Ctrl-C) before the
    daemon is ready (a big arena to reserve): it says so and exits 130, and the
    daemon, its starter gone, serves on (no broken-pipe crash). connect's
    timeout ending early is the same case."""
    path = str(tmp_path / "db")
    starter = subprocess.Popen([sys.executable, "-m", "fusedb", "serve", path, "--detach",
                                "--options", '{"arena_bytes": 1073741824}'],
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(serve_processes(path)) < 2:      # the starter and its forked daemon
            assert starter.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        starter.send_signal(signal.SIGINT)
        assert starter.wait(30) == 130
        assert "interrupted; the daemon" in starter.stderr.read()
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
    deadline = time.monotonic() + 60
    while True:
        try:
            db = fusedb.connect(path)
            break
        except fusedb.NotRunningError:
            assert time.monotonic() < deadline, open(os.path.join(path, "serve.log")).read()
            time.sleep(0.05)
    try:
        db.put(b"k", b"v")
        assert db.get(b"k") == b"v"
    finally:
        db.close()
        stop(path)
    log = open(os.path.join(path, "serve.log")).read()
    assert "Traceback" not in log and "stopped cleanly" in log, log
    with pytest.raises(fusedb.NotRunningError, match="ready within"):
        fusedb.connect(path, start=True, timeout=0.01)
    deadline = time.monotonic() + 60
    while serve_processes(path):      # the daemon that attempt may have started
        if owner(path) and owner(path)[1]:
            stop(path)
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_too_many_shards_for_dev_shm_is_refused_before_anything_is_made(tmp_path):
    """A daemon whose shared memory cannot fit in /dev/shm: refused up front with
    the bytes needed and free (where /dev/shm is as large as memory, creating
    the arenas until ENOSPC would bring the OOM killer first)."""
    from fusedb.shm import region
    path = str(tmp_path / "db")
    r = cli("serve", path, "--shards", "100000")
    assert r.returncode == 1 and "/dev/shm has" in r.stderr and "Traceback" not in r.stderr
    # This database's objects only: other runs on the machine come and go meanwhile.
    tag = region.tag_for(path)
    assert not [e for e in os.listdir("/dev/shm") if f"fusedb-{tag}-" in e]


def test_stop_never_signals_a_process_that_reused_a_dead_daemons_pid(tmp_path):
    """A daemon killed with SIGKILL leaves its pid in its meta block until the
    next serve; if another process gets that pid, fusedb stop must not signal
    it (simulated: the pid words rewritten to a live ``sleep``)."""
    from fusedb.core.layout import M_ROUTER_PID, M_SERVE_PID
    from fusedb.shm import region
    from fusedb.shm.meta import Meta
    path = str(tmp_path / "db")
    pid = serve_detached(path)
    kill_daemon(path, pid)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        meta = Meta(region.name(region.tag_for(path), "meta"))
        meta.hdr[M_ROUTER_PID] = meta.hdr[M_SERVE_PID] = stranger.pid
        meta.close()
        r = cli("stop", path)
        assert r.returncode == 1 and "died without closing" in r.stderr, r.stderr
        assert stranger.poll() is None, "fusedb stop signalled a stranger"
    finally:
        stranger.kill()
        stranger.wait()
    serve_detached(path)          # recovers, and removes the old shared memory
    stop(path)


def test_pinning_to_a_cpu_that_is_not_available_is_refused(tmp_path):
    cpus = psutil.Process().cpu_affinity()
    r = cli("serve", str(tmp_path / "db"), "--options", json.dumps({"pin": [max(cpus) + 1]}))
    assert r.returncode == 1 and "are not available to this process" in r.stderr
    assert "Traceback" not in r.stderr
