"""Database paths (README, "Paths"): ``fusedb.open`` and ``fusedb.connect``
(with and without ``start=True``) take a str, bytes (any bytes a file name may
hold, also ones that are not UTF-8) or an os.PathLike; any other type is an
InvalidArgumentError and nothing is created."""

from __future__ import annotations

import os
import pathlib

import pytest

import fusedb

from test_daemon import serve_processes, stop

#: A file name that is not UTF-8: legal on Linux, reachable only as bytes.
RAW = b"db-\xff"


def _spellings(path: str) -> list:
    return [path, os.fsencode(path), pathlib.Path(path)]


@pytest.mark.parametrize("shards", [None, 1])
def test_open_takes_str_bytes_and_pathlike(tmp_path, shards):
    # Before: open(b"path") raised AttributeError ('bytes' has no 'encode').
    path = str(tmp_path / "db")
    opts = {} if shards is None else {"shards": shards}
    for n, p in enumerate(_spellings(path)):
        with fusedb.open(p, **opts) as db:
            assert db.path == path and isinstance(db.path, str)
            assert db.get(b"n") == (None if n == 0 else b"%d" % n)
            db.incr(b"n")


def test_open_takes_a_bytes_path_that_is_not_utf8(tmp_path):
    path = os.fsencode(tmp_path) + b"/" + RAW
    with fusedb.open(path) as db:
        db.put(b"k", b"v")
    with fusedb.open(pathlib.Path(os.fsdecode(path))) as db:
        assert db.get(b"k") == b"v"
    assert os.listdir(os.fsencode(tmp_path)) == [RAW]


def test_connect_takes_str_bytes_and_pathlike(tmp_path):
    path = str(tmp_path / "db")
    try:
        with fusedb.connect(os.fsencode(path), start=True, shards=1) as db:
            db.put(b"k", b"v")
        for p in _spellings(path):
            with fusedb.connect(p) as db:
                assert db.path == path and db.get(b"k") == b"v"
            with fusedb.connect(p, start=True) as db:       # attaches to the running one
                assert db.get(b"k") == b"v"
    finally:
        if serve_processes(path):
            stop(path)


@pytest.mark.parametrize("bad", [5, None, 1.5, ["db"], object()])
def test_other_path_types_are_refused(tmp_path, bad, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = [lambda: fusedb.open(bad), lambda: fusedb.open(bad, shards=1),
             lambda: fusedb.connect(bad), lambda: fusedb.connect(bad, start=True, shards=1)]
    for call in calls:
        with pytest.raises(fusedb.InvalidArgumentError, match=r"str, bytes or os\.PathLike"):
            call()
    assert os.listdir(tmp_path) == []
