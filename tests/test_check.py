"""``fusedb check``: on a database another process has open and is writing and
merging (a consistent snapshot: never a false alarm, still every real
problem), and the routing invariants of the manifest (bounds sorted, unique,
within size; every segment's keys inside its leaf's range; one leaf per
segment)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fusedb
from fusedb.core import manifest
from fusedb.tools.check import check, is_open
from fusedb.core.segment import file_name

from fusedb.testing import TINY

WRITER = os.path.join(os.path.dirname(__file__), "live_writer.py")
CLI = [sys.executable, "-m", "fusedb"]


def segment_ids(path: str) -> set[int]:
    return {int(n[4:-5], 16) for n in os.listdir(path) if n.endswith(".fseg")}


@pytest.mark.parametrize("mode,runs", [("multiprocess", 10), ("embedded", 6)])
def test_check_of_a_database_being_written_never_raises_a_false_alarm(tmp_path, mode, runs):
    """A writer process writes and flushes (merges publish, replaced segment files
    are deleted, WAL files rotate and are truncated) while ``fusedb check`` runs
    again and again: every run must pass. Before the snapshot, 1 in 10 to 9 in 20
    runs reported "segment file missing" (a file merged away while check read)."""
    path = str(tmp_path / "db")
    w = subprocess.Popen([sys.executable, WRITER, path, mode], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    results = []
    try:
        assert w.stdout.read(1) == b"R", "the writer did not start"
        assert is_open(path)
        first = segment_ids(path)
        for _ in range(runs):
            out = subprocess.run(CLI + ["check", path], capture_output=True, text=True,
                                 timeout=120)
            results.append((out.returncode, out.stdout[-600:] + out.stderr[-600:]))
        for _ in range(20):
            results.append((0 if not (p := check(path)) else 1, "\n".join(p[:5])))
        changed = segment_ids(path) != first
    finally:
        w.stdin.close()
        assert w.wait(120) == 0
    bad = [r for r in results if r[0] != 0]
    assert not bad, f"{len(bad)} of {len(results)} checks failed; first: {bad[0][1]}"
    assert changed, "segments were merged away while check ran"
    assert all("the database is open" in r[1] for r in results[:runs])
    assert check(path) == [] and not is_open(path)


def test_check_of_an_open_database_still_finds_a_missing_segment(tmp_path):
    """The snapshot retries only when the manifest stopped naming the missing
    file; a file missing while the current manifest names it is reported."""
    path = str(tmp_path / "db")
    with fusedb.open(path, **TINY) as db:
        for i in range(100):
            db.put(b"k%03d" % i, b"v" * 20)
        db.flush()
        segid = manifest.read(path).leaves[0].segs[0]
        seg = os.path.join(path, file_name(segid))
        with open(seg, "rb") as f:
            data = f.read()
        os.unlink(seg)
        try:
            problems = check(path)
        finally:
            with open(seg, "wb") as f:       # put it back for the database's close
                f.write(data)
        assert any("segment file missing" in p and file_name(segid) in p for p in problems)


# -- routing invariants (issue 9, item 4) ------------------------------------------------

def damage_first_leaf(man):
    man.leaves[0].lo = b"a"


def damage_unsorted(man):
    man.leaves[1].lo, man.leaves[2].lo = man.leaves[2].lo, man.leaves[1].lo


def damage_duplicate(man):
    man.leaves[2].lo = man.leaves[1].lo


def damage_range(man):
    man.leaves[1].lo = b"k4"         # leaf 1 holds k30..k59: k30 lies below b"k4"


def damage_overlap(man):
    man.leaves[0].segs.append(man.leaves[1].segs[0])


def damage_long_bound(man):
    man.leaves[2].lo = b"k6" + b"x" * 5000


def damage_too_many(man):
    man.leaves[2].segs = man.leaves[2].segs[:1] + [901, 902, 903, 904]


ROUTING_CASES = [
    (damage_first_leaf, "leaf 0: lower bound b'a' is not b''"),
    (damage_unsorted, "leaf 2: lower bound b'k3' is below leaf 1's b'k6'"),
    (damage_duplicate, "leaf 2: lower bound b'k3' equals leaf 1's b'k3'"),
    (damage_range, "leaf 1 [b'k4', b'k6'):"),
    (damage_overlap, "is named by leaf 0 and leaf 1"),
    (damage_long_bound, "is 5002 bytes, longer than max_key_size=32"),
    (damage_too_many, "leaf 2: names 5 segments, more than 4"),
]


@pytest.fixture(scope="module")
def three_leaves(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("routing") / "db")
    with fusedb.open(path, split_keys=[b"k3", b"k6"], **dict(TINY, leaf_max_bytes=1 << 20)) as db:
        for i in range(90):
            db.put(b"k%02d" % i, b"v%d" % i)
    assert check(path) == []
    return path


@pytest.mark.parametrize("damage,message", ROUTING_CASES,
                         ids=[c[0].__name__ for c in ROUTING_CASES])
def test_check_reports_broken_routing_naming_the_leaf_and_bound(three_leaves, damage, message):
    path = three_leaves
    good = manifest.read(path)
    man = manifest.read(path)
    damage(man)
    manifest.write(path, man)       # a manifest with a valid checksum and bad routing
    try:
        problems = check(path)
        assert any(message in p for p in problems), problems
        if damage is damage_range:
            assert any("holds key b'k30', below the leaf's lower bound b'k4'" in p
                       for p in problems), problems
            out = subprocess.run(CLI + ["check", path], capture_output=True, text=True)
            assert out.returncode == 1 and message in out.stdout
    finally:
        manifest.write(path, good)
    assert check(path) == []
