"""A database is its owner's alone (issue 14, security): every file it creates
is 0600, the directory ``open`` creates 0700, its shared memory objects 0600,
whatever the process's umask. Other users reach it through ``fusedb serve``
(a password, a unix socket mode of the operator's choice)."""

from __future__ import annotations

import os
import stat

import fusedb
from fusedb.testing import fusedb_shm


def modes(root: str) -> dict[str, int]:
    out = {}
    for where, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(where, name)
            out[os.path.relpath(p, root)] = stat.S_IMODE(os.stat(p).st_mode)
    return out


def test_files_directory_and_shared_memory_are_the_owners_only(tmp_path):
    path = str(tmp_path / "db")
    old = os.umask(0)           # the most permissive umask: the modes are FuseDB's own
    try:
        with fusedb.open(path, shards=2) as db:
            db.put(b"a", b"1")
            db.flush()
            db.put(b"b", b"2")      # a WAL file next to the segment
            shm = fusedb_shm(path)
            assert shm, "multiprocess mode has shared memory"
            shm_modes = {name: stat.S_IMODE(os.stat(os.path.join("/dev/shm", name)).st_mode)
                         for name in shm if os.path.exists(os.path.join("/dev/shm", name))}
            files = modes(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert any(n.endswith(".fseg") for n in files) and any("wal" in n.lower() for n in files)
    assert {n: m for n, m in files.items() if m != (0o700 if os.path.isdir(
        os.path.join(path, n)) else 0o600)} == {}
    assert shm_modes and set(shm_modes.values()) == {0o600}
