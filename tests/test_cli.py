"""The ``fusedb`` command as an operator meets it (issue 15, item 5), each run as
``python -m fusedb`` in its own process: the benchmark from an installed package
(no source checkout) and without its optional modules; output into a pipe whose
reader has gone; non-databases (nothing created or changed); help texts; Ctrl-C.
Missing modules are simulated by a directory first on PYTHONPATH holding a module
of that name that raises the ModuleNotFoundError of a missing one (inherited by
every process the command starts); FuseDB itself is never replaced."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import setuptools

import fusedb
from fusedb.shm import region
from fusedb.tools.bench.report import COLUMNS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_BENCH = ["bench", "--keys", "200", "--ops", "200", "--workloads", "counters"]
MISSING = 'raise ModuleNotFoundError(f"No module named {__name__!r}", name=__name__)\n'


def fusedb_cmd(*args: str, path: str | None = None, cwd=None, timeout: float = 120, **kw):
    """``python -m fusedb ARGS`` (text); ``path``: PYTHONPATH (default: this tree)."""
    env = dict(os.environ, PYTHONPATH=path or ROOT)
    return subprocess.run([sys.executable, "-m", "fusedb", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd, **kw)


def without(tmp_path, *modules: str) -> str:
    """A PYTHONPATH on which ``modules`` cannot be imported (as if not installed)."""
    block = tmp_path / "not-installed"
    block.mkdir(exist_ok=True)
    for m in modules:
        (block / f"{m}.py").write_text(MISSING)
    return f"{block}{os.pathsep}{ROOT}"


def rows(stdout: str) -> dict[str, list[str]]:
    """The bench table's rows by engine (the cells after workload and engine)."""
    return {cells[1]: cells[2:] for line in stdout.splitlines()
            if (cells := line.split()) and cells[0] == "counters"}


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr, r.stderr


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> str:
    """A closed database whose dump is ~5,000 lines."""
    path = str(tmp_path_factory.mktemp("cli") / "db")
    with fusedb.open(path) as db:
        for i in range(5000):
            db.put(b"key:%05d" % i, b"value %d" % i)
    return path


# -- the benchmark ------------------------------------------------------------------------

def test_bench_runs_from_the_installed_package_alone(tmp_path):
    """``pip install .`` installs the package, not perf/: the command found no
    perf/bench.py and exited 2. The package alone (as a wheel installs it, with
    the packages pyproject's rule finds) runs the benchmark, in a directory with
    no source checkout."""
    assert "fusedb.tools.bench" in setuptools.find_packages(ROOT, include=["fusedb*"])
    site = tmp_path / "site-packages"
    shutil.copytree(os.path.join(ROOT, "fusedb"), site / "fusedb",
                    ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.pyx"))
    r = fusedb_cmd(*TINY_BENCH, "--engines", "fusedb,lmdb", path=str(site), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert set(rows(r.stdout)) == {"fusedb", "lmdb"}, r.stdout
    assert all(float(c.replace(",", "")) > 0 for c in rows(r.stdout)["fusedb"][:2])
    no_traceback(r)


def test_bench_without_hdrh_says_what_to_install_and_fails(tmp_path):
    """Without the bench extra every run failed on ``import hdrh`` and the command
    exited 0 with an empty table. Now: nothing runs, one line names the module
    and the extra, exit 2."""
    t = time.monotonic()
    r = fusedb_cmd(*TINY_BENCH, "--engines", "fusedb", path=without(tmp_path, "hdrh"))
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert "hdrh" in line and "pip install '.[bench]'" in line and "hdrhistogram" in line
    assert time.monotonic() - t < 30


def test_bench_skips_an_engine_that_is_not_installed(tmp_path):
    """An engine whose module is missing is skipped with what to install; the
    others run; the exit status (3) says the run was incomplete."""
    r = fusedb_cmd(*TINY_BENCH, "--engines", "fusedb,rocksdict",
                   path=without(tmp_path, "rocksdict"))
    assert r.returncode == 3, r.stderr
    assert set(rows(r.stdout)) == {"fusedb"}, r.stdout
    assert re.search(r"rocksdict: skipped, cannot import rocksdict .*pip install "
                     r"'\.\[bench\]' in FuseDB's source checkout \(or: pip install rocksdict\)",
                     r.stderr), r.stderr
    no_traceback(r)


def test_bench_plot_without_matplotlib_fails_before_running(tmp_path):
    r = fusedb_cmd(*TINY_BENCH, "--engines", "fusedb", "--plot", str(tmp_path / "png"),
                   path=without(tmp_path, "matplotlib"))
    assert r.returncode == 2 and "matplotlib" in r.stderr and r.stdout == "", r.stderr
    assert not (tmp_path / "png").exists()


def test_bench_failed_run_is_one_line_and_exit_1(tmp_path):
    """A run that fails (here FuseDB refuses 100,000 shards over 200 keys) is
    named with its error in one line, the other engines' rows are printed, and
    the command exits 1 (it exited 0)."""
    out = tmp_path / "run.json"
    r = fusedb_cmd(*TINY_BENCH, "--engines", "fusedb,lmdb", "--shards", "100000",
                   "--json", str(out))
    assert r.returncode == 1, r.stderr
    assert set(rows(r.stdout)) == {"lmdb"}, r.stdout
    failed = [ln for ln in r.stderr.splitlines() if "counters on fusedb failed" in ln]
    assert len(failed) == 1 and "InvalidArgumentError" in failed[0], r.stderr
    assert "Traceback" not in r.stderr
    saved = json.loads(out.read_text())
    assert [x["engine"] for x in saved["results"]] == ["lmdb"] and len(saved["failed"]) == 1


def test_bench_rejects_unknown_names_before_running():
    r = fusedb_cmd(*TINY_BENCH, "--engines", "fusedb,rocksdb")
    assert r.returncode == 2 and "unknown engine(s): rocksdb" in r.stderr, r.stderr


def test_every_bench_column_is_explained_in_help_and_docs():
    """Columns such as "worst/median 1-s p99.9" and "WA io" were explained nowhere."""
    r = fusedb_cmd("bench", "--help")
    assert r.returncode == 0, r.stderr
    epilog = r.stdout.split("columns of the table:", 1)[1]
    with open(os.path.join(ROOT, "docs", "perf.md")) as f:
        docs = f.read().split("### Columns", 1)[1].split("\n## ", 1)[0]
    for c in COLUMNS:
        assert re.search(rf"^  {re.escape(c.name)}\s", epilog, re.M), c.name
        assert f"**{c.name}**" in docs, c.name
    header = fusedb_cmd(*TINY_BENCH, "--engines", "dict").stdout.splitlines()[2]
    assert header.split() == " ".join(c.name for c in COLUMNS).split()


def test_perf_bench_script_runs_the_same_benchmark(tmp_path):
    """``python perf/bench.py`` (docs/perf.md's commands) and perf/report.py still work."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = tmp_path / "run.json"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "perf", "bench.py"), *TINY_BENCH[1:],
                        "--engines", "fusedb,dict", "--json", str(out)], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert set(rows(r.stdout)) == {"fusedb", "dict"}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "perf", "report.py"), str(out)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert "| counters | fusedb |" in r.stdout and "| counters | dict |" in r.stdout


def test_ctrl_c_of_bench_exits_130_and_leaves_nothing(tmp_path):
    """Ctrl-C (SIGINT to the foreground process group) during a run: exit 130, no
    traceback, the run's temporary directory removed."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=ROOT, TMPDIR=str(tmp))
    p = subprocess.Popen([sys.executable, "-m", "fusedb", "bench", "--keys", "1000", "--ops",
                          "50000000", "--workloads", "counters", "--engines", "dict"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp.iterdir()):          # the run's process made its directory
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        time.sleep(0.5)                         # into the timed loop
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 130, err
    assert "Traceback" not in err, err
    assert list(tmp.iterdir()) == []


# -- pipes --------------------------------------------------------------------------------

def closed_pipe_run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m fusedb ARGS`` with stdout a pipe whose reader has gone
    (``| head`` after it exits): every write fails with EPIPE."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "fusedb", *args], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=timeout,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    finally:
        os.close(w)


def test_dump_into_head_ends_quietly_with_141(database):
    """``fusedb dump DB | head`` ended in a BrokenPipeError traceback. Now it ends
    as ``seq 1 1000000 | head`` does in a shell: status 141 (128 + SIGPIPE), no
    message."""
    p = subprocess.Popen([sys.executable, "-m", "fusedb", "dump", database],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    first = p.stdout.readline()
    p.stdout.close()                          # head has read its lines and exited
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait(60) == 141, err
    assert first.startswith(b"MANIFEST ") and err == b""


@pytest.mark.parametrize("command", ["check", "dump"])
def test_output_into_a_closed_pipe_ends_quietly(database, command):
    r = closed_pipe_run(command, database)
    assert (r.returncode, r.stderr) == (141, "")


@pytest.mark.parametrize("shards", ["0", "1"])
def test_demo_into_a_closed_pipe_closes_its_database(tmp_path, shards):
    """The demo's database is closed cleanly when its output fails (at its first
    line, unbuffered, or at the end): the next run finds it healthy."""
    path = str(tmp_path / "db")
    args = ("demo", path, "--ops", "1000", "--shards", shards, "--processes", "1")
    r = closed_pipe_run(*args)
    assert (r.returncode, r.stderr) == (141, "")
    assert fusedb_cmd("check", path).returncode == 0
    assert region.leftovers(region.tag_for(path)) == []
    r = fusedb_cmd(*args)
    assert r.returncode == 0, r.stderr
    assert re.search(r"has seen [12] demo run\(s\)", r.stdout), r.stdout


def test_stats_into_a_closed_pipe_ends_quietly(tmp_path):
    """``fusedb stats [--json] | head`` against a running daemon, which it leaves
    running and detaches from."""
    path = str(tmp_path / "db")
    r = fusedb_cmd("serve", path, "--detach", "--shards", "1")
    assert r.returncode == 0, r.stderr
    try:
        for flags in ([], ["--json"]):
            r = closed_pipe_run("stats", path, *flags)
            assert (r.returncode, r.stderr) == (141, "")
        r = fusedb_cmd("stats", path, "--json")
        assert r.returncode == 0 and len(json.loads(r.stdout)["clients"]) == 1, r.stdout
    finally:
        r = fusedb_cmd("stop", path)
        assert r.returncode == 0, r.stderr


# -- not a database -----------------------------------------------------------------------

def _listing(path) -> list | None:
    return sorted(os.listdir(path)) if os.path.isdir(path) else None


@pytest.mark.parametrize("kind", ["missing", "empty", "foreign", "file"])
@pytest.mark.parametrize("command,status", [("dump", 2), ("check", 2), ("stats", 1),
                                            ("repair", 2), ("stop", 1)])
def test_a_non_database_is_refused_and_left_untouched(tmp_path, kind, command, status):
    """``fusedb dump`` of an empty directory exited 0. Every operator command
    refuses what is not a database with one line and a non-zero status, and
    creates or changes nothing there."""
    path = tmp_path / "x"
    if kind == "empty":
        path.mkdir()
    elif kind == "foreign":
        path.mkdir()
        (path / "notes.txt").write_text("not FuseDB's")
    elif kind == "file":
        path.write_text("a file")
    before = (_listing(path), path.exists() and path.stat().st_mtime_ns)
    r = fusedb_cmd(command, str(path))
    assert r.returncode == status, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"fusedb {command}: ")
    assert (_listing(path), path.exists() and path.stat().st_mtime_ns) == before
    assert region.leftovers(region.tag_for(str(path))) == []


def test_dump_of_a_damaged_database_is_one_line_and_exit_1(tmp_path, database):
    path = tmp_path / "db"
    shutil.copytree(database, path)
    segment = sorted(n for n in os.listdir(path) if n.endswith(".fseg"))[0]
    os.remove(path / segment)
    r = fusedb_cmd("dump", str(path))
    assert r.returncode == 1, r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith("fusedb dump: stopped: ") and segment in line
    assert f"fusedb check {path}" in line


def test_demo_on_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    r = fusedb_cmd("demo", str(tmp_path / "f"), "--shards", "0")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("fusedb demo: cannot open ")


# -- help ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["", "serve", "stop", "stats", "demo", "check", "repair",
                                     "dump", "bench"])
def test_help_is_plain_text(command):
    """``fusedb --help`` showed a literal ``fusedb`` (reST in the description)."""
    r = fusedb_cmd(*command.split(), "--help")
    assert r.returncode == 0, r.stderr
    for markup in ("``", ":func:", ":class:", ":data:", "**"):
        assert markup not in r.stdout, (markup, r.stdout)
    assert r.stdout.startswith(f"usage: fusedb {command}".rstrip() + " ")
    assert "exit status" in r.stdout.lower()
