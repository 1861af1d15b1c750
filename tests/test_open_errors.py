"""The errors of opening and attaching (issue 15, item 6): each one a documented
FuseDBError subclass whose message says what to do, and the ``group`` option
that shares a database with a group's processes (README, "Who can attach").

Other users are real: a child forked from this (root) process drops to
nobody (uid 65534) with setgroups/setgid/setuid and runs FuseDB code already
imported here (nobody cannot exec the interpreter under /root); the databases
of those tests live under a 0755 directory of /tmp that nobody can search."""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import tempfile

import pytest

import fusedb
from fusedb.shm import region
from fusedb.testing import fusedb_shm

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")


# -- unknown options, a file, a second open here -----------------------------------------

def test_an_unknown_option_names_it_and_the_close_ones(tmp_path):
    path = str(tmp_path / "db")
    for call, where in ((lambda: fusedb.open(path, shard=2), "open()"),
                        (lambda: fusedb.connect(path, start=True, shard=2), "connect()"),
                        (lambda: fusedb.connect(path, shard=2), "connect()")):
        with pytest.raises(fusedb.UnknownOptionError) as ei:
            call()
        e = ei.value
        assert isinstance(e, fusedb.InvalidArgumentError) and isinstance(e, TypeError)
        assert "unknown option(s) shard" in str(e) and "did you mean shards?" in str(e), e
        assert where in str(e) and "durability" in str(e)       # the valid options listed
    assert not os.path.exists(path), "nothing was created"


@pytest.mark.parametrize("sub", ["", "below"])
def test_a_path_that_is_a_file(tmp_path, sub):
    f = tmp_path / "afile"
    f.write_bytes(b"mine")
    path = os.path.join(str(f), sub) if sub else str(f)
    for kw in ({}, {"shards": 1}):
        with pytest.raises(fusedb.NotADatabaseError, match="is a file, not a directory") as ei:
            fusedb.open(path, **kw)
        assert str(f) in str(ei.value) and "pass the path of a directory" in str(ei.value)
    assert f.read_bytes() == b"mine"


@pytest.mark.parametrize("first,second", [({}, {}), ({}, {"shards": 1}),
                                          ({"shards": 1}, {}), ({"shards": 1}, {"shards": 1})])
def test_a_second_open_in_this_process_says_so(tmp_path, first, second):
    path = str(tmp_path / "db")
    with fusedb.open(path, **first) as db:
        db.put(b"k", b"v")
        with pytest.raises(fusedb.LockedError) as ei:
            fusedb.open(path, **second)
        msg = str(ei.value)
        assert "already open in this process" in msg and "another process" not in msg, msg
        assert "use the handle" in msg
        assert ("multiprocess" if first else "embedded") in msg      # which open holds it
        assert db.get(b"k") == b"v"
    with fusedb.open(path) as db:          # closed: opens again
        assert db.get(b"k") == b"v"


def test_an_open_in_another_process_is_named(tmp_path):
    import subprocess
    import sys
    path = str(tmp_path / "db")
    fusedb.open(path).close()
    child = subprocess.Popen([sys.executable, "-c", "import sys, fusedb; db = fusedb.open("
                              f"{path!r}); print('open', flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "open\n"
        with pytest.raises(fusedb.LockedError, match=f"another process \\(pid {child.pid}\\)"):
            fusedb.open(path)
    finally:
        child.stdin.close()
        child.wait(60)


def test_an_unknown_group_is_refused(tmp_path):
    with pytest.raises(fusedb.InvalidArgumentError, match="no group is named"):
        fusedb.open(str(tmp_path / "db"), group="no-such-group-fusedb")
    with pytest.raises(fusedb.InvalidArgumentError, match="group name or a gid"):
        fusedb.open(str(tmp_path / "db"), group=-1)


# -- other users --------------------------------------------------------------------------

@pytest.fixture
def shared_tmp():
    """A directory under /tmp every user may search (tmp_path's parents are 0700)."""
    d = tempfile.mkdtemp(prefix="fusedb-users-")
    os.chmod(d, 0o755)
    try:
        yield d
        assert fusedb_shm(d) == set()
    finally:
        shutil.rmtree(d)


def free_gid() -> int:
    """A gid no group has: only the database and the child share it."""
    return next(g for g in range(48000, 49000) if not _has_group(g))


def _has_group(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
        return True
    except KeyError:
        return False


def as_user(fn, groups=(), uid: int = NOBODY, gid: int = NOBODY):
    """Run ``fn()`` in a forked child that became ``uid``/``gid`` with the
    supplementary ``groups``; returns ("ok", result) or ("error", class names of
    the exception's MRO, message)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: never returns into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            try:
                out = ["ok", fn()]
            except Exception as e:  # noqa: BLE001 - reported to the parent
                out = ["error", [c.__name__ for c in type(e).__mro__], str(e)]
            os.write(w, json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the child failed"
    return json.loads(data)


def attach_and_count(path: str):
    db = fusedb.connect(path, timeout=5)
    try:
        return [db.incr(b"n"), db.get(b"flushed").decode()]
    finally:
        db.close()


def _warm_up(path: str) -> None:
    """Import here, as root, what a child will need (nobody cannot read /root)."""
    with fusedb.connect(path) as db:
        db.incr(b"warm")
        db.get(b"flushed")


@root_only
@pytest.mark.parametrize("case", ["existing empty directory", "directory to create",
                                  "existing database"])
def test_a_directory_this_user_may_not_write(shared_tmp, case):
    path = os.path.join(shared_tmp, "db")
    if case == "existing empty directory":
        os.mkdir(path, 0o755)
    elif case == "existing database":
        with fusedb.open(path) as db:
            db.put(b"k", b"v")
        os.chmod(path, 0o755)
    before = sorted(os.listdir(shared_tmp))
    for kw in ({}, {"shards": 1}):
        kind, mro, msg = as_user(lambda kw=kw: fusedb.open(path, **kw))
        assert kind == "error" and "PermissionDeniedError" in mro and "PermissionError" in mro \
            and "FuseDBError" in mro, (kind, mro, msg)
        assert path in msg and "nobody (uid 65534)" in msg and "permission" in msg, msg
        assert "root (uid 0)" in msg, msg         # who owns what was refused
    assert sorted(os.listdir(shared_tmp)) == before


@root_only
def test_connect_from_another_user_names_the_owner(shared_tmp):
    path = os.path.join(shared_tmp, "db")
    with fusedb.open(path, shards=1) as db:
        db.put(b"flushed", b"1")
        _warm_up(path)
        kind, mro, msg = as_user(lambda: attach_and_count(path))
        assert kind == "error" and "PermissionDeniedError" in mro and "PermissionError" in mro, \
            (kind, mro, msg)
        assert "root (uid 0)" in msg and "nobody (uid 65534)" in msg, msg
        assert "group=" in msg and "run as its owner" in msg, msg
        assert db.incr(b"n") == 1, "the database is unharmed"


@root_only
@pytest.mark.parametrize("how", ["open", "serve"])
def test_a_database_shared_with_a_group(shared_tmp, how):
    """open(path, group=G) (or fusedb serve --group G): the directory 02770 of G,
    its files and shared memory 0660 of G, whatever the umask; a process of G
    (not the owner) attaches, reads a segment file and counts; one outside G
    gets PermissionDeniedError."""
    import subprocess
    import sys
    path = os.path.join(shared_tmp, "db")
    gid = free_gid()
    old = os.umask(0o077)        # the strictest umask: the modes are FuseDB's own
    try:
        if how == "open":
            db = fusedb.open(path, shards=1, group=str(gid))
        else:
            subprocess.run([sys.executable, "-m", "fusedb", "serve", path, "--detach",
                            "--shards", "1", "--group", str(gid)], check=True, timeout=120)
            db = fusedb.connect(path)
    finally:
        os.umask(old)
    try:
        db.put(b"flushed", b"segment")
        db.flush()                       # now only a segment file holds it
        db.put(b"after", b"wal")         # and a WAL file holds this
        _warm_up(path)
        st = os.stat(path)
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (gid, 0o2770)
        files = {n: os.stat(os.path.join(path, n)) for n in os.listdir(path) if n != "serve.log"}
        assert any(n.endswith(".fseg") for n in files) and any(n.startswith("wal") for n in files)
        assert {n: (s.st_gid, stat.S_IMODE(s.st_mode)) for n, s in files.items()
                if (s.st_gid, stat.S_IMODE(s.st_mode)) != (gid, 0o660)} == {}
        shm = fusedb_shm(path)
        assert {n for n in shm if n.startswith("sem.")} and len(shm) >= 5
        modes = {n: os.stat(os.path.join(region.SHM_DIR, n)) for n in shm}
        assert {n: (s.st_gid, stat.S_IMODE(s.st_mode)) for n, s in modes.items()
                if (s.st_gid, stat.S_IMODE(s.st_mode)) != (gid, 0o660)} == {}

        assert as_user(lambda: attach_and_count(path), groups=[gid]) == ["ok", [1, "segment"]]
        assert as_user(lambda: attach_and_count(path), groups=[gid]) == ["ok", [2, "segment"]]
        kind, mro, msg = as_user(lambda: attach_and_count(path))
        assert kind == "error" and "PermissionDeniedError" in mro, (kind, mro, msg)
        assert f"gid {gid}" in msg and "mode 0660" in msg, msg
        assert db.incr(b"n") == 3
    finally:
        db.close()
        if how == "serve":
            subprocess.run([sys.executable, "-m", "fusedb", "stop", path], check=True,
                           timeout=120)
    # Reopened without group=, the directory stays shared, and so does its shared memory.
    with fusedb.open(path, shards=1) as db:
        assert as_user(lambda: attach_and_count(path), groups=[gid]) == ["ok", [4, "segment"]]


@root_only
def test_only_a_member_of_the_group_may_share_with_it(shared_tmp):
    os.chmod(shared_tmp, 0o777)
    path = os.path.join(shared_tmp, "db")
    gid = free_gid()

    def share():
        fusedb.open(path, group=gid).close()

    kind, mro, msg = as_user(share)
    assert kind == "error" and "PermissionDeniedError" in mro, (kind, mro, msg)
    assert f"gid {gid}" in msg and "member" in msg, msg
    assert as_user(share, groups=[gid]) == ["ok", None]
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, gid, 0o2770)
