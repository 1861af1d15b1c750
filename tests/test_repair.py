"""``fusedb repair``: damage one part of a real database (a flipped byte, a
truncated or missing file, in a segment, the manifest or the WAL), repair it,
and check against a dict model of what was written that every entry outside the
damaged part reads back exactly, that the report names what was lost, that the
damaged file is set aside byte for byte, that the database opens and ``fusedb
check`` passes; and that a healthy database is left untouched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import fusedb
from fusedb import testing
from fusedb.runtime import identity
from fusedb.core import manifest
from fusedb.tools.check import check
from fusedb.tools.repair import LOST_DIR, REPORT_FILE, repair
from fusedb.core.segment import Segment, file_name
from fusedb.shm import region
from fusedb.wal.reader import decode, list_files, read_file
from fusedb.wal.recovery import salvage

from fusedb.testing import TINY, FakeClock, crash

#: Small buffers (many merges, layered segments), no size splits, three leaves.
OPTS = dict(TINY, leaf_max_bytes=1 << 20)
SPLITS = [b"k3", b"k6"]
#: Buffers that hold a whole test phase (the WAL keeps what they hold), small
#: WAL files (several per shard).
WAL_OPTS = dict(buffer_bytes=64 * 1024, buffer_slots=512, wal_file_bytes=2048,
                durability="none", max_key_size=32)
CLI = [sys.executable, "-m", "fusedb"]


# -- building databases and a model of them ------------------------------------------

#: Keys ``build`` writes with a TTL of 1000 s (as the last write of the key).
TTL_KEYS = {b"k%02d" % i for i in range(0, 90, 3)} - {b"k%02d" % i for i in range(0, 90, 4)}


def build(path: str, clock) -> dict[bytes, bytes | None]:
    """A closed three-leaf database with several segments per leaf holding
    overwritten, deleted, counter and TTL entries; the model (None: deleted)."""
    model: dict[bytes, bytes | None] = {}
    with fusedb.open(path, split_keys=SPLITS, clock=clock, **OPTS) as db:
        for i in range(90):
            k = b"k%02d" % i
            db.put(k, b"a%d" % i)
            model[k] = b"a%d" % i
        db.flush()
        for i in range(0, 90, 3):
            k = b"k%02d" % i
            db.put(k, b"b%d" % i, ttl=1000)
            model[k] = b"b%d" % i
        for i in range(1, 90, 9):
            db.delete(b"k%02d" % i)
            model[b"k%02d" % i] = None
        for i in range(2, 90, 10):
            k = b"k%02dn" % i
            model[k] = b"%d" % db.incr(k, i + 1)
        db.flush()
        for i in range(0, 90, 4):
            db.put(b"k%02d" % i, b"c%d" % i)
            model[b"k%02d" % i] = b"c%d" % i
    return model


def newest_in(path: str) -> dict[bytes, int]:
    """Segment id holding each key's newest version (tombstones included), by the
    manifest's rank order."""
    where: dict[bytes, int] = {}
    for lf in manifest.read(path).leaves:
        for segid in lf.segs:
            seg = Segment(os.path.join(path, file_name(segid)), segid)
            try:
                for j in range(seg.count):
                    where.setdefault(seg.key(j), segid)
            finally:
                seg.close()
    return where


def segment_paths(path: str) -> list[str]:
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".fseg"))


def tree(path: str) -> dict[str, tuple]:
    """Every file under ``path``: size, mtime and content hash."""
    out = {}
    for root, _dirs, files in os.walk(path):
        for n in files:
            p = os.path.join(root, n)
            st_ = os.stat(p)
            with open(p, "rb") as f:
                out[os.path.relpath(p, path)] = (st_.st_size, st_.st_mtime_ns,
                                                 hashlib.sha256(f.read()).hexdigest())
    return out


def flip(p: str, offset: int) -> bytes:
    """XOR one byte of file ``p`` with 0xff; return the damaged file's bytes."""
    with open(p, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    with open(p, "rb") as f:
        return f.read()


def cut_to(p: str, size: int) -> bytes:
    with open(p, "r+b") as f:
        f.truncate(size)
    with open(p, "rb") as f:
        return f.read()


def assert_intact(path: str, model: dict, clock, skip=frozenset(), ttls=frozenset()) -> dict:
    """Open; every model key not in ``skip`` reads back exactly (deleted: None),
    in ``get`` and ``scan``, with its TTL (1000 s for ``ttls``, else none); no
    key the model never had appears. Returns the scan."""
    with fusedb.open(path, clock=clock) as db:
        got = dict(db.scan())
        for k, v in model.items():
            if k in skip:
                continue
            assert db.get(k) == v, (k, db.get(k), v)
            assert got.get(k) == v, k
            if k in ttls and v is not None:
                assert db.ttl(k) == 1000.0, "a TTL survives repair"
            elif v is not None:
                assert db.ttl(k) == -1.0, k
    assert set(got) <= {k for k, v in model.items()}, set(got) - set(model)
    return got


def assert_repaired(path: str, rep, damaged: dict[str, bytes]) -> None:
    """The report says repaired; each damaged file is in lost/ byte for byte;
    report.json there matches; check passes; a second repair changes nothing."""
    assert rep.repaired and rep.lost_dir.startswith(os.path.join(path, LOST_DIR))
    for name, data in damaged.items():
        with open(os.path.join(rep.lost_dir, name), "rb") as f:
            assert f.read() == data, f"{name} set aside unchanged"
        assert any(m["file"] == name for m in rep.moved)
    with open(os.path.join(rep.lost_dir, REPORT_FILE)) as f:
        assert json.load(f) == json.loads(json.dumps(rep.to_dict()))
    assert check(path) == []
    before = tree(path)
    again = repair(path)
    assert not again.repaired and not again.lost and tree(path) == before


# -- a healthy database ----------------------------------------------------------------

def test_repair_leaves_a_healthy_database_untouched(tmp_path, clock):
    path = str(tmp_path / "db")
    model = build(path, clock)
    before = tree(path)
    rep = repair(path)
    assert not rep.repaired and rep.lost == [] and rep.moved == [] and rep.lost_dir is None
    assert tree(path) == before, "nothing changed, nothing added"
    assert "nothing to repair" in rep.lines()[0]
    assert_intact(path, model, clock, ttls=TTL_KEYS)


def test_repair_refuses_a_directory_without_fusedb_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(fusedb.InvalidArgumentError, match="no FuseDB file"):
        repair(str(tmp_path))
    assert os.listdir(tmp_path) == ["notes.txt"], "not even a LOCK file is created"
    out = subprocess.run(CLI + ["repair", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "no FuseDB file" in out.stderr


# -- segments ----------------------------------------------------------------------------

def victim(path: str) -> tuple[int, int]:
    """(leaf index, segment id) of a segment holding the newest version of some
    keys and lying above an older segment of its leaf."""
    man = manifest.read(path)
    where = set(newest_in(path).values())
    for i, lf in enumerate(man.leaves):
        for segid in lf.segs[:-1]:
            if segid in where:
                return i, segid
    raise AssertionError("no layered segment to damage")


@pytest.mark.parametrize("how", ["header", "bits", "hash", "keys", "footer", "truncated",
                                 "missing"])
def test_a_damaged_segment_loses_only_its_entries(tmp_path, clock, how):
    path = str(tmp_path / "db")
    model = build(path, clock)
    where = newest_in(path)
    man = manifest.read(path)
    leaf, segid = victim(path)
    name = file_name(segid)
    p = os.path.join(path, name)
    size = os.path.getsize(p)
    seg = Segment(p, segid)
    count = seg.count
    seg.close()
    damaged = {}
    if how == "missing":
        os.unlink(p)
    elif how == "truncated":
        damaged[name] = cut_to(p, size - 24)
    else:
        # "bits": the top byte of the bucket-bits field (a huge layout if trusted)
        damaged[name] = flip(p, {"header": 20, "bits": 27, "hash": 70, "keys": size // 2,
                                 "footer": size - 12}[how])
    with pytest.raises(fusedb.CorruptionError):
        fusedb.open(path)
    assert check(path), "check finds it"
    rep = repair(path)
    lost = [x for x in rep.lost if x.kind == "segment"]
    assert [x.file for x in lost] == [name]
    hi = man.leaves[leaf + 1].lo if leaf + 1 < len(man.leaves) else None
    assert (lost[0].lo, lost[0].hi) == (man.leaves[leaf].lo, hi), "the key range it held"
    if how in ("hash", "keys", "footer"):      # header and size intact: its count is known
        assert lost[0].entries == count and not lost[0].verified
    else:
        assert lost[0].entries is None
    assert_repaired(path, rep, damaged)
    in_lost = {k for k, s in where.items() if s == segid}
    assert in_lost, "the segment held the newest version of some keys"
    got = assert_intact(path, model, clock, skip=in_lost, ttls=TTL_KEYS)
    assert any(got.get(k) != model[k] for k in in_lost), "those entries really are lost"


def test_a_lost_segment_is_restored_from_the_wal(tmp_path, clock):
    """The WAL is truncated only once later manifests are durable, so a recent
    segment's entries are often still in it: repair takes them from there."""
    path = str(tmp_path / "db")
    db = fusedb.open(path, split_keys=SPLITS, clock=clock, **dict(WAL_OPTS, wal_file_bytes=1 << 20))
    model = {}
    for i in range(90):
        db.put(b"k%02d" % i, b"a%d" % i)
        model[b"k%02d" % i] = b"a%d" % i
    db.flush()
    for i in range(0, 90, 7):
        db.delete(b"k%02d" % i)
        model[b"k%02d" % i] = None
    crash(db)     # the rings stay in /dev/shm: repair salvages them as open would
    man = manifest.read(path)
    segid = man.leaves[1].segs[0]
    os.unlink(os.path.join(path, file_name(segid)))
    rep = repair(path)
    lost, = [x for x in rep.lost if x.kind == "segment"]
    # Leaf 1 holds k30..k59; k35, k42, k49 and k56 were deleted after the flush.
    assert lost.file == file_name(segid) and lost.restored == 26, "every entry came back"
    assert rep.wal_mutations >= 90
    assert_repaired(path, rep, {})
    assert_intact(path, model, clock)
    assert not region.leftovers(region.tag_for(path))


# -- the manifest --------------------------------------------------------------------

@pytest.mark.parametrize("how", ["magic", "body", "digest", "truncated", "missing"])
def test_a_damaged_or_missing_manifest_is_rebuilt_from_the_segments(tmp_path, clock, how):
    path = str(tmp_path / "db")
    model = build(path, clock)
    p = os.path.join(path, "MANIFEST")
    size = os.path.getsize(p)
    damaged = {}
    if how == "missing":
        os.unlink(p)
    elif how == "truncated":
        damaged["MANIFEST"] = cut_to(p, size // 2)
    else:
        damaged["MANIFEST"] = flip(p, {"magic": 2, "body": 30, "digest": size - 5}[how])
    segs_before = {os.path.basename(s) for s in segment_paths(path)}
    rep = repair(path)
    assert [x.kind for x in rep.lost] == ["manifest"] and "rebuilt" in rep.manifest
    assert_repaired(path, rep, damaged)
    got = assert_intact(path, model, clock, ttls=TTL_KEYS)
    assert got == {k: v for k, v in model.items() if v is not None}, "nothing lost"
    with fusedb.open(path, clock=clock) as db:
        db.put(b"k05", b"new")              # the rebuilt leaves take writes and merges
        db.flush()
        assert db.get(b"k05") == b"new"
    assert segs_before, "there were segments to rebuild from"


def test_rebuild_does_not_bring_back_keys_a_merge_deleted(tmp_path, clock):
    """A crash between a merge's manifest and the deletion of the file it
    replaced leaves that file behind; with the manifest lost too, the rebuild
    must recognise it as replaced (the merge carried its entries over with
    their seqnos) and not resurrect the keys the merge dropped as deleted. A
    deleted key beyond the key span of the merge's output cannot be told from
    a live key of a split half that was never written: it is kept and reported."""
    path = str(tmp_path / "db")
    opts = dict(OPTS, max_segments=1)           # every merge is full: drops tombstones
    model = {}
    with fusedb.open(path, clock=clock, **opts) as db:
        for i in range(12):
            db.put(b"k%02d" % i, b"a%d" % i)
            model[b"k%02d" % i] = b"a%d" % i
        db.flush()
    old, = segment_paths(path)
    with open(old, "rb") as f:
        stale = f.read()
    with fusedb.open(path, clock=clock, **opts) as db:
        for i in range(0, 12, 3):
            db.delete(b"k%02d" % i)
            model[b"k%02d" % i] = None
        db.put(b"k01", b"z")
        model[b"k01"] = b"z"
        db.flush()
    assert old not in segment_paths(path)
    with open(old, "wb") as f:                  # the replaced file, left by a crash
        f.write(stale)
    os.unlink(os.path.join(path, "MANIFEST"))
    rep = repair(path)
    assert any("stale" in m["why"] for m in rep.moved)
    assert rep.uncertain == [b"k00".hex()] and "b'k00'" in " ".join(rep.warnings)
    got = assert_intact(path, model, clock, skip={b"k00"})
    assert got[b"k00"] == b"a0", "kept, and reported as possibly deleted"


def test_a_manifest_with_broken_routing_is_rebuilt(tmp_path, clock):
    path = str(tmp_path / "db")
    model = build(path, clock)
    man = manifest.read(path)
    man.leaves[1].lo = b"k4"                    # keys k30..k39 now lie below leaf 1
    manifest.write(path, man)
    assert any("leaf 1" in p and "below the leaf's lower bound b'k4'" in p for p in check(path))
    rep = repair(path)
    assert "routing" in rep.lost[0].problem
    assert_repaired(path, rep, {})
    assert_intact(path, model, clock, ttls=TTL_KEYS)


# -- the WAL -----------------------------------------------------------------------------

def build_wal(path: str, clock) -> tuple[dict, list]:
    """Segments for k00..k89, then new keys and deletes only in the WAL (several
    files), left by a crash and salvaged. Returns the model and, per WAL file,
    (path, [(record offset, keys of its mutations)])."""
    db = fusedb.open(path, split_keys=SPLITS, clock=clock, **WAL_OPTS)
    model = {}
    for i in range(90):
        db.put(b"k%02d" % i, b"a%d" % i)
        model[b"k%02d" % i] = b"a%d" % i
    db.flush()
    for i in range(120):
        k = b"k%02dw" % (i % 90) if i < 90 else b"k%02d" % (i - 90)
        if i >= 90:
            db.delete(k)
            model[k] = None
        else:
            db.put(k, b"w%d" % i)
            model[k] = b"w%d" % i
        if i % 10 == 9:
            testing.write_out_wal(db, 0)    # write the ring out: files rotate
    for i in range(6):                          # and some records for the last file
        db.put(b"k%02dx" % i, b"x")
        model[b"k%02dx" % i] = b"x"
    crash(db)
    salvage(region.tag_for(path), path)
    region.remove_leftovers(region.tag_for(path))
    files = [(p, [(off, keys) for off, _end, keys in recs]) for p, recs in wal_records(path)]
    assert len(files) >= 3 and all(len(recs) >= 4 for _p, recs in files), "several WAL files"
    return model, files


def wal_records(path: str) -> list[tuple[str, list[tuple[int, int, set]]]]:
    """Per WAL file: (path, [(record offset, end, keys of its mutations)])."""
    files = []
    for _shard, lst in sorted(list_files(path).items()):
        for i, (_no, p) in enumerate(lst):
            wf = read_file(p, last=i == len(lst) - 1)
            run = decode([wf])
            recs = []
            for r, off in enumerate(wf.record_offsets):
                end = wf.record_offsets[r + 1] if r + 1 < len(wf.record_offsets) else len(wf.data)
                recs.append((off, end, {run.key(m) for m, mo in enumerate(wf.muts)
                                        if off <= mo < end}))
            files.append((p, recs))
    return files


def test_a_flipped_byte_in_the_wal_loses_only_its_record(tmp_path, clock):
    path = str(tmp_path / "db")
    model, files = build_wal(path, clock)
    p, recs = files[1]                          # a middle file, a middle record
    off, keys = recs[len(recs) // 2]
    data = flip(p, off + 40)
    with pytest.raises(fusedb.CorruptionError):
        fusedb.open(path)
    rep = repair(path)
    lost, = [x for x in rep.lost if x.kind == "wal"]
    assert lost.file == os.path.basename(p) and f"offsets {off}.." in lost.problem
    assert_repaired(path, rep, {os.path.basename(p): data})
    got = assert_intact(path, model, clock, skip=keys)
    assert all(k not in got for k in keys), "its puts are lost, every later record kept"


@pytest.mark.parametrize("which", ["middle file", "last file"])
def test_a_truncated_wal_file_keeps_the_records_before_the_cut(tmp_path, clock, which):
    path = str(tmp_path / "db")
    model, files = build_wal(path, clock)
    p, recs = files[1] if which == "middle file" else files[-1]
    cut = len(recs) // 2
    size = os.path.getsize(p)
    data = cut_to(p, recs[cut][0] + 20)
    skip = set().union(*(k for _o, k in recs[cut:]))
    rep = repair(path)
    lost = [x for x in rep.lost if x.kind == "wal"]
    assert lost[0].file == os.path.basename(p) and lost[0].bytes == 20
    assert ("torn tail" in lost[0].problem) == (which == "last file")
    if which == "middle file":     # and the stream positions show the rest is missing
        assert [(x.file, x.bytes) for x in lost[1:]] == \
            [(os.path.basename(files[2][0]), size - len(data))]
    else:
        assert len(lost) == 1
    assert_repaired(path, rep, {os.path.basename(p): data})
    got = assert_intact(path, model, clock, skip=skip)
    assert all(k not in got for k in skip if model[k] is not None)


@pytest.mark.parametrize("how", ["cut at a record boundary", "file removed"])
def test_a_hole_in_the_wal_stream_is_found_and_reported(tmp_path, clock, how):
    """A middle WAL file cut exactly between two records, or removed: no record
    fails its checksum, but file numbers and stream positions show the hole."""
    path = str(tmp_path / "db")
    model, files = build_wal(path, clock)
    p, recs = files[1]
    if how == "file removed":
        os.unlink(p)
        skip = set().union(*(k for _o, k in recs))
    else:
        cut_to(p, recs[2][0])
        skip = set().union(*(k for _o, k in recs[2:]))
    problems = check(path)
    assert len(problems) == 1 and ("missing" in problems[0]), problems
    rep = repair(path)
    gap, = rep.lost
    assert gap.file == os.path.basename(files[2][0]) and "missing" in gap.problem
    assert_repaired(path, rep, {})
    got = assert_intact(path, model, clock, skip=skip)
    assert all(k not in got for k in skip if model[k] is not None)


def test_a_damaged_wal_file_header_loses_nothing(tmp_path, clock):
    """Records frame and verify on their own: a bad header costs no record."""
    path = str(tmp_path / "db")
    model, files = build_wal(path, clock)
    p = files[1][0]
    data = flip(p, 1)
    rep = repair(path)
    lost, = rep.lost
    assert "file header" in lost.problem and lost.bytes == 64
    assert_repaired(path, rep, {os.path.basename(p): data})
    assert_intact(path, model, clock)


def test_a_database_that_is_its_wal_alone_is_repaired(tmp_path, clock):
    """A database that crashed before its first manifest: a damaged record is
    skipped, every other record becomes a segment of one rebuilt leaf."""
    path = str(tmp_path / "db")
    db = fusedb.open(path, clock=clock, **dict(WAL_OPTS, wal_file_bytes=1 << 20))
    model = {}
    for i in range(50):
        db.put(b"k%02d" % i, b"v%d" % i)
        model[b"k%02d" % i] = b"v%d" % i
    crash(db)
    salvage(region.tag_for(path), path)
    region.remove_leftovers(region.tag_for(path))
    assert not os.path.exists(os.path.join(path, "MANIFEST")) and check(path) == []
    (_no, p), = list_files(path)[0]
    wf = read_file(p, last=True)
    flip(p, wf.record_offsets[10] + 40)
    rep = repair(path)
    assert [x.kind for x in rep.lost] == ["wal"] and rep.leaves == 1 and rep.entries == 49
    assert_repaired(path, rep, {})
    got = assert_intact(path, model, clock, skip={b"k10"})
    assert b"k10" not in got


# -- refusal and the command line ------------------------------------------------------

def test_repair_refuses_an_open_database(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.open(path) as db:
        db.put(b"a", b"1")
        with pytest.raises(fusedb.LockedError, match="open.*repair works only on a closed"):
            repair(path)
        out = subprocess.run(CLI + ["repair", path], capture_output=True, text=True)
        assert out.returncode == 3
        assert "refused" in out.stderr and f"pid {os.getpid()}" in out.stderr
        assert db.get(b"a") == b"1"
    assert not os.path.exists(os.path.join(path, LOST_DIR))


def test_cli_repair_reports_in_json_and_text(tmp_path, clock):
    path = str(tmp_path / "db")
    model = build(path, clock)
    where = newest_in(path)
    leaf, segid = victim(path)
    man = manifest.read(path)
    flip(os.path.join(path, file_name(segid)), 100)
    out = subprocess.run(CLI + ["check", path], capture_output=True, text=True)
    assert out.returncode == 1 and "checksum mismatch" in out.stdout
    out = subprocess.run(CLI + ["repair", "--json", path], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    rep = json.loads(out.stdout)
    assert rep["repaired"] and rep["lost"][0]["file"] == file_name(segid)
    assert rep["lost"][0]["lo"] == man.leaves[leaf].lo.hex()
    assert rep["lost"][0]["hi"] == man.leaves[leaf + 1].lo.hex()
    assert os.path.exists(os.path.join(rep["lost_dir"], file_name(segid)))
    out = subprocess.run(CLI + ["check", path], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok")
    out = subprocess.run(CLI + ["repair", path], capture_output=True, text=True)
    assert out.returncode == 0 and "nothing to repair" in out.stdout
    assert_intact(path, model, clock, skip={k for k, s in where.items() if s == segid},
                  ttls=TTL_KEYS)


# -- property: any one damaged file --------------------------------------------------

@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(st.tuples(st.sampled_from(["put", "delete", "incr", "flush"]),
                              st.integers(0, 59), st.binary(max_size=40)),
                    min_size=20, max_size=250),
       crashed=st.booleans(), kind=st.sampled_from(["MANIFEST", "seg-", "wal-"]),
       pick=st.integers(0, 10**6), where_=st.floats(0, 1),
       how=st.sampled_from(["flip", "truncate", "remove"]))
def test_property_one_damaged_file(tmp_path_factory, ops, crashed, kind, pick, where_, how):
    """Random operations against a dict model, a clean close or a crash (WAL
    left behind), then one file (the manifest, a segment or a WAL file)
    flipped, truncated or removed: repair acts exactly when check finds damage,
    reports only that file, and afterwards every key whose newest version was
    not in the damaged part reads back, and check passes."""
    clock = FakeClock()
    path = str(tmp_path_factory.mktemp("p") / "db")
    model: dict[bytes, bytes | None] = {}
    db = fusedb.open(path, split_keys=SPLITS, clock=clock, **OPTS)
    for op, i, value in ops:
        k = b"k%02d" % i
        if op == "put":
            db.put(k, value)
            model[k] = value
        elif op == "delete":
            db.delete(k)
            model[k] = None
        elif op == "incr":
            k = k + b"n"
            model[k] = b"%d" % db.incr(k, 3)
        else:
            db.flush()
    if crashed:
        crash(db)
        salvage(region.tag_for(path), path)
        region.remove_leftovers(region.tag_for(path))
    else:
        db.close()
    where = newest_in(path) if os.path.exists(os.path.join(path, "MANIFEST")) else {}
    wal = {os.path.basename(p): recs for p, recs in wal_records(path)}
    files = sorted(n for n in os.listdir(path) if n.startswith(kind) and not n.endswith(".tmp"))
    if not files:
        return                # (no file of that kind: a clean close leaves no WAL)
    name = files[pick % len(files)]
    p = os.path.join(path, name)
    size = os.path.getsize(p)
    if how == "remove":
        os.unlink(p)
        at = 0
    elif how == "truncate":
        at = int(where_ * (size - 1))
        cut_to(p, at)
    else:
        at = min(int(where_ * size), size - 1)
        flip(p, at)
    if name in wal:           # keys of the records the damage touches
        skip = set().union(set(), *(keys for off, end, keys in wal[name]
                                    if how == "remove"
                                    or (how == "truncate" and (end > at or at < 64))
                                    or (how == "flip" and off <= at < end)))
    else:
        skip = {k for k, s in where.items() if name == file_name(s)}
    damaged = bool(check(path))
    rep = repair(path)
    assert rep.repaired == damaged
    lost = {x.file for x in rep.lost}
    if not damaged:
        assert not lost
    elif name in wal:         # a hole in the stream is reported at the next file
        assert lost and lost <= set(wal)
    else:
        assert lost == {name}
    assert check(path) == []
    assert_intact(path, model, clock, skip=skip)


# -- the identity file (fusedb/runtime/identity.py) ----------------------------------------------

def test_repair_replaces_a_damaged_identity_file(tmp_path, clock):
    path = str(tmp_path / "db")
    model = build(path, clock)
    p = os.path.join(path, identity.IDENTITY_FILE)
    recorded = identity.read(path)["layout"]
    damaged = {identity.IDENTITY_FILE: flip(p, 1)}
    assert any("identity" in x or "FUSEDB" in x for x in check(path))
    rep = repair(path)
    assert [(x.kind, x.problem) for x in rep.lost] == [("identity", "damaged")]
    layout = identity.read(path)["layout"]
    longest = max(len(k) for k in model)
    assert layout["max_key_size"] >= max(longest, recorded["max_key_size"])
    assert_repaired(path, rep, damaged)
    assert_intact(path, model, clock, ttls=TTL_KEYS)


def test_a_missing_identity_file_is_no_damage(tmp_path, clock):
    """A database of an earlier version has none: open adopts it and writes one."""
    path = str(tmp_path / "db")
    model = build(path, clock)
    os.unlink(os.path.join(path, identity.IDENTITY_FILE))
    assert not repair(path).repaired
    assert_intact(path, model, clock, ttls=TTL_KEYS)
    assert identity.read(path) is not None
