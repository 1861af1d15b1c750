"""Issue 9, items 3, 4 and 6: shared memory reserved at open (a full /dev/shm is
an error, never SIGBUS), layout options recorded with the database (a reopen
with other limits loses nothing), and the identity file (a directory that is not
FuseDB's is refused, and clean-up deletes only FuseDB's own files)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import posix_ipc
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st, target

import fusedb
from fusedb import testing
from fusedb.core import failpoints
from fusedb.runtime import identity
from fusedb.errors import CorruptionError, FuseDBError, InvalidArgumentError, \
    KeyTooLargeError, NotADatabaseError, SharedMemoryError
from fusedb.core.segment import file_name
from fusedb.shm import region
from fusedb.shm.arena import region_bytes as arena_region_bytes
from fusedb.shm.meta import Meta, region_bytes as meta_region_bytes
from fusedb.wal.ring import DATA_OFF as RING_DATA_OFF

from fusedb.testing import fusedb_shm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def files_of(path: str) -> dict[str, bytes]:
    return {fn: open(os.path.join(path, fn), "rb").read() for fn in sorted(os.listdir(path))}


# -- item 3: shared memory reserved at open --------------------------------------------


def shm_size() -> tuple[int, int]:
    st_ = os.statvfs(region.SHM_DIR)
    return st_.f_blocks * st_.f_frsize, st_.f_bavail * st_.f_frsize


def test_open_larger_than_dev_shm_raises_and_leaves_nothing(tmp_path):
    """An arena larger than /dev/shm's free space: SharedMemoryError at open naming
    /dev/shm, the bytes free and the bytes needed, before anything is created
    (where /dev/shm is as large as memory, filling it would bring the OOM
    killer before ENOSPC). The arena is larger than /dev/shm's *size*, so the
    test never takes space other processes are using."""
    total, free = shm_size()
    arena = max(total, free) + (1 << 20)
    path = str(tmp_path / "db")
    with pytest.raises(SharedMemoryError) as ei:
        fusedb.open(path, arena_bytes=arena)
    msg = str(ei.value)
    assert "/dev/shm has" in msg and "bytes free and this database needs" in msg
    assert f"{arena_region_bytes(arena // (256 << 10), 256 << 10):,}-byte arena" in msg
    assert isinstance(ei.value, OSError) and isinstance(ei.value, FuseDBError)
    assert region.leftovers(region.tag_for(path)) == []
    with fusedb.open(path) as db:       # the same directory opens once there is room
        db.put(b"k", b"v")
    with fusedb.open(path) as db:
        assert db.get(b"k") == b"v"


def _fail_nth_creation(n: int):
    calls = [0]

    def hit():
        calls[0] += 1
        if calls[0] == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return hit, calls


@pytest.mark.parametrize("mode", ["embedded", "multiprocess"])
def test_enospc_at_each_shared_memory_creation(tmp_path, mode):
    """ENOSPC at each shared-memory object an open creates (meta block, arenas,
    WAL rings; in multiprocess mode the semaphores too): SharedMemoryError, no
    object left in /dev/shm, nothing acknowledged lost; with room back the next
    open works."""
    path = str(tmp_path / "db")
    extra = {"shards": 2} if mode == "multiprocess" else {}
    with fusedb.open(path, **extra) as db:
        db.put(b"kept", b"1")
    tag = region.tag_for(path)
    # Count the creations of one open: the points to fail at.
    hit, calls = _fail_nth_creation(0)
    with failpoints.armed("shm.create", hit):
        fusedb.open(path, **extra).close()
    creations = calls[0]
    # regions (meta, and per shard an arena and a ring); multiprocess, also per
    # shard the two wake-up semaphores (the locks live in the meta block)
    assert creations == (3 if mode == "embedded" else 5 + 4)
    for n in range(1, creations + 1):
        hit, _ = _fail_nth_creation(n)
        with failpoints.armed("shm.create", hit):
            with pytest.raises(SharedMemoryError, match="/dev/shm"):
                fusedb.open(path, **extra)
        assert region.leftovers(tag) == [], n
    with fusedb.open(path, **extra) as db:
        assert db.get(b"kept") == b"1"


SHM_CHILD = textwrap.dedent("""
    import os, subprocess, sys
    import fusedb
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", "/dev/shm"], check=True)
    with open("/dev/shm/filler", "wb") as f:
        f.write(bytes(60 << 20))
    path = sys.argv[1]
    try:
        db = fusedb.open(path)
        print("OPENED default", flush=True)
    except fusedb.SharedMemoryError as e:
        print("REFUSED", e, flush=True)
    else:
        db.close()
    print("LEFT", sorted(os.listdir("/dev/shm")), flush=True)
    # Options that fit: then fill /dev/shm to the last byte and write enough to touch
    # every page of the arena and ring. Reserved pages never raise SIGBUS.
    db = fusedb.open(path, arena_bytes=1 << 20, buffer_bytes=64 << 10, buffer_slots=256,
                     wal_ring_bytes=256 << 10, max_leaves=64, max_key_size=64,
                     max_value_size=1024)
    fd = os.open("/dev/shm/filler2", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass
    os.close(fd)
    print("FREE", os.statvfs("/dev/shm").f_bavail, flush=True)
    for i in range(20000):
        db.put(b"k%06d" % i, b"v" * 200)
    db.close()
    with fusedb.open(path, arena_bytes=1 << 20, buffer_bytes=64 << 10, buffer_slots=256,
                     wal_ring_bytes=256 << 10, max_leaves=64, max_key_size=64,
                     max_value_size=1024) as db:
        assert sum(1 for _ in db.scan()) == 20000
    print("WROTE", flush=True)
""")


def test_nearly_full_dev_shm_never_sigbus(tmp_path):
    """The issue's input for real: a private 64 MiB /dev/shm holding 60 MiB.
    open() with the defaults (38 MB of shared memory) raises SharedMemoryError
    naming /dev/shm, leaving nothing there; with options that fit, writes
    after /dev/shm is filled to the last byte work. Before the fix, the first
    writes died with SIGBUS."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a private tmpfs on /dev/shm (unshare -m)")
    probe = ["unshare", "-m", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", "/dev/shm"]
    if shutil.which("unshare") is None or subprocess.run(probe, capture_output=True).returncode:
        pytest.skip("unshare -m with a tmpfs mount is not permitted here (no mount namespaces)")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(["unshare", "-m", sys.executable, "-c", SHM_CHILD, str(tmp_path / "db")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode != -signal.SIGBUS, "the child died of SIGBUS"
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    lines = p.stdout.splitlines()
    assert lines[0].startswith("REFUSED") and "/dev/shm" in lines[0], lines
    o = fusedb.Options()
    need = (meta_region_bytes(o.max_leaves, o.max_key_size, 1)
            + arena_region_bytes(o.slabs_per_arena, o.buffer_bytes)
            + RING_DATA_OFF + o.wal_ring_bytes)      # 42,332,624 with the defaults
    assert f"needs {need:,} bytes" in lines[0], lines[0]
    assert lines[1] == "LEFT ['filler']", lines
    assert lines[2:] == ["FREE 0", "WROTE"], lines


# -- item 4: layout options recorded; a reopen with other limits loses nothing --------


def test_smaller_max_key_size_reopen_loses_nothing(tmp_path):
    """The issue's input: 120 keys of 260 bytes with the defaults; reopened with
    max_key_size=64, short keys written and flushed until leaves split (a split
    picks a stored 260-byte key as a bound); reopened with the defaults every
    long key is still there, by get and by scan. Before the fix 6 were lost
    here: the bound overran its 64-byte slot into its neighbours'."""
    path = str(tmp_path / "db")
    longs = [b"k%03d" % i + b"a" * 256 for i in range(120)]
    with fusedb.open(path) as db:
        for k in longs:
            db.put(k, b"v")
    with fusedb.open(path, max_key_size=64) as db:
        for r in range(100):
            for i in range(120):
                db.put(b"k%03d-%03d" % (i, r), b"y" * 1000)
            db.flush()
            bounds = testing.leaf_bounds(db)
            if len(bounds) > 6:
                break
        assert any(len(b) == 260 for b in bounds), "no long key became a bound"
        assert bounds == sorted(bounds)
        with pytest.raises(KeyTooLargeError):
            db.get(longs[0])                 # the limit applies to new calls
        assert sum(1 for k, _v in db.scan() if len(k) == 260) == 120
    with fusedb.open(path) as db:
        assert [k for k in longs if db.get(k) != b"v"] == []
        assert sum(1 for k, _v in db.scan() if len(k) == 260) == 120
    assert identity.read(path)["layout"]["max_key_size"] == 512


def test_route_write_refuses_a_bound_longer_than_its_slot(tmp_path):
    """Defence in depth: the routing table refuses (raises, writes nothing) a
    bound longer than its slots instead of overrunning the next ones."""
    nm = region.name(region.tag_for(str(tmp_path)), "meta")
    meta = Meta(nm, 8, 16, 1, create=True)
    try:
        meta.route_write([(b"", 0), (b"b" * 16, 1)])
        ver = meta.hdr[2]
        with pytest.raises(FuseDBError, match="17 bytes"):
            meta.route_write([(b"", 0), (b"a" * 17, 1), (b"c", 2)])
        assert meta.hdr[2] == ver
        assert meta.routes() == ([b"", b"b" * 16], [0, 1])
        assert meta.bound_fits(b"x" * 16) and not meta.bound_fits(b"x" * 17)
    finally:
        meta.close()
        posix_ipc.unlink_shared_memory(nm)


def test_layout_is_recorded_and_kept_by_smaller_limits(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.open(path, max_key_size=1024) as db:
        db.put(b"x" * 1000, b"long")
    assert identity.read(path)["layout"] == {"max_key_size": 1024, "max_value_size": 16384}
    with fusedb.open(path) as db:
        assert testing.max_key_slot(db) == 1024      # bound slots hold the stored keys
        assert dict(db.scan()) == {b"x" * 1000: b"long"}
        with pytest.raises(KeyTooLargeError):
            db.put(b"y" * 600, b"")
    assert identity.read(path)["layout"]["max_key_size"] == 1024


def test_reopen_whose_buffers_cannot_hold_a_stored_entry_is_refused(tmp_path):
    """A stored 16,000-byte value, reopened with buffers of 4 KiB: before the fix
    the open worked and expire() on the value failed an assertion (its rewrite
    did not fit a buffer). Now the open raises InvalidArgumentError naming the
    stored and recorded sizes, and a fitting reopen finds the value intact."""
    path = str(tmp_path / "db")
    with fusedb.open(path) as db:
        db.put(b"big", b"v" * 16000)
    small = dict(max_value_size=100, buffer_bytes=4096, buffer_slots=4, arena_bytes=64 << 10)
    with pytest.raises(InvalidArgumentError) as ei:
        fusedb.open(path, **small)
    msg = str(ei.value)
    assert "values of up to 16000 bytes" in msg and "max_value_size=16384" in msg
    with fusedb.open(path, max_value_size=100) as db:
        assert db.expire(b"big", 100)
        assert db.get(b"big") == b"v" * 16000


def test_recorded_limits_above_what_is_stored_do_not_refuse(tmp_path):
    """Opened once with the defaults (recording 16 KiB values) but holding only
    small values: a reopen with small buffers measures what is stored, works,
    and records the smaller limits."""
    path = str(tmp_path / "db")
    small = dict(max_value_size=1000, buffer_bytes=16384, buffer_slots=64,
                 arena_bytes=16384 * 16)
    with fusedb.open(path, **small) as db:
        db.put(b"a", b"1" * 900)
    with fusedb.open(path) as db:
        assert db.get(b"a") == b"1" * 900
    assert identity.read(path)["layout"]["max_value_size"] == 16384
    with fusedb.open(path, **small) as db:
        db.put(b"b", b"2" * 1000)
    assert identity.read(path)["layout"] == {"max_key_size": 512, "max_value_size": 1000}
    with fusedb.open(path) as db:
        assert dict(db.scan()) == {b"a": b"1" * 900, b"b": b"2" * 1000}


SPLITTY = dict(buffer_bytes=16384, buffer_slots=64, arena_bytes=16384 * 16,
               wal_ring_bytes=64 << 10, max_value_size=100, max_leaves=64, merge_tick=0.002)

#: One reopen: its max_key_size and leaf_max_bytes (200: leaves split at every
#: merge; 16 MiB: never), and its writes (first key byte, key length: None for
#: the limit, value length).
key_length = st.one_of(st.none(), st.integers(1, 300))
reopen = st.tuples(st.sampled_from([8, 24, 64, 300]), st.sampled_from([200, 16 << 20]),
                   st.lists(st.tuples(st.integers(0, 255), key_length, st.integers(0, 100)),
                            min_size=1, max_size=20))


@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.generate, Phase.target],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=st.lists(reopen, min_size=2, max_size=4))
def test_option_changes_between_reopens_lose_nothing(tmp_path_factory, steps):
    """Reopen with other max_key_size and leaf_max_bytes each time, write keys up
    to the limit (a first byte, then "!" repeated: a bound that overran its slot
    would compare differently), flushing every few writes so leaves split: every
    key written is there, by scan and (within the current limit) by get, as in a
    dict. Generation is steered (hypothesis.target) toward splits under a limit
    shorter than stored keys, the case that lost keys before the fix. (No
    shrinking: a failure shows the example as generated, in seconds.)"""
    path = str(tmp_path_factory.mktemp("hyp") / "db")
    model: dict[bytes, bytes] = {}
    risky = 0
    for limit, leaf_max, writes in steps:
        with fusedb.open(path, max_key_size=limit, leaf_max_bytes=leaf_max, **SPLITTY) as db:
            splits = db.stats()["splits"]
            for n, (first, length, vlen) in enumerate(writes):
                key = bytes([first]) + b"!" * (min(length or limit, limit) - 1)
                db.put(key, b"v" * vlen)
                model[key] = b"v" * vlen
                if n % 4 == 3:
                    db.flush()
            db.flush()
            if max(map(len, model)) > limit:
                risky += db.stats()["splits"] - splits
            assert dict(db.scan()) == model
            for k, v in model.items():
                if len(k) <= limit:
                    assert db.get(k) == v
    target(float(risky), label="splits under a limit shorter than stored keys")
    with fusedb.open(path, max_key_size=300, **SPLITTY) as db:
        assert dict(db.scan()) == model
        assert all(db.get(k) == v for k, v in model.items())


# -- item 6: the identity file; foreign directories; clean-up of our own files only ----


def make_project(path) -> dict[str, bytes]:
    os.makedirs(path, exist_ok=True)
    for fn, data in {"main.py": b"print(1)\n", "build.tmp": b"half a build",
                     "seg-0000000000000001.fseg": b"my own file, not FuseDB's",
                     "notes.txt": b"x"}.items():
        with open(os.path.join(path, fn), "wb") as f:
            f.write(data)
    return files_of(path)


def test_open_refuses_a_project_directory_and_changes_nothing(tmp_path, monkeypatch):
    """The issue's input: fusedb.open(".") in a project directory. Before the fix
    it deleted build.tmp and seg-0000000000000001.fseg and made a database there."""
    proj = tmp_path / "project"
    before = make_project(proj)
    monkeypatch.chdir(proj)
    with pytest.raises(NotADatabaseError, match="not a FuseDB database") as ei:
        fusedb.open(".")
    assert isinstance(ei.value, InvalidArgumentError)
    assert files_of(str(proj)) == before            # no file deleted, none created
    assert region.leftovers(region.tag_for(str(proj))) == []


def test_open_refuses_a_directory_with_only_foreign_lookalikes(tmp_path):
    """FuseDB-like names with foreign contents are not FuseDB's: a MANIFEST and a
    WAL-named file without FuseDB's magic, an empty LOCK among them."""
    path = tmp_path / "d"
    path.mkdir()
    (path / "MANIFEST").write_bytes(b"manifest of some other tool\n")
    (path / "wal-000-0000000001.log").write_bytes(b"some other log")
    (path / "LOCK").write_bytes(b"")
    before = files_of(str(path))
    with pytest.raises(NotADatabaseError):
        fusedb.open(str(path))
    assert files_of(str(path)) == before


@pytest.mark.parametrize("how", ["missing", "empty", "empty-lock"])
def test_missing_or_empty_directory_becomes_a_database(tmp_path, how):
    path = tmp_path / "d"
    if how != "missing":
        path.mkdir()
    if how == "empty-lock":
        (path / "LOCK").write_bytes(b"")     # a crash right after LOCK was created
    with fusedb.open(str(path)) as db:
        db.put(b"k", b"v")
    rec = identity.read(str(path))
    assert rec["format"] == "fusedb" and rec["version"] == 1
    assert rec["layout"] == {"max_key_size": 512, "max_value_size": 16384}
    # Once it is a database, files of the user's beside it do not make it foreign.
    (path / "README").write_bytes(b"mine")
    with fusedb.open(str(path)) as db:
        assert db.get(b"k") == b"v"
    assert (path / "README").read_bytes() == b"mine"


def test_database_of_the_previous_version_is_adopted(tmp_path):
    """A database without FUSEDB (earlier version), closed cleanly (a MANIFEST):
    opens, gets its identity file, its layout measured from what it holds."""
    path = str(tmp_path / "d")
    with fusedb.open(path, max_key_size=2048) as db:
        db.put(b"k" * 1500, b"v")
    os.unlink(os.path.join(path, identity.IDENTITY_FILE))
    with fusedb.open(path) as db:
        assert dict(db.scan()) == {b"k" * 1500: b"v"}
        assert testing.max_key_slot(db) >= 1500
    assert identity.read(path)["layout"] == {"max_key_size": 1500, "max_value_size": 16384}


def test_crashed_database_of_the_previous_version_is_adopted(tmp_path):
    """Killed before its first manifest (only LOCK and WAL files): adopted, and
    the WAL replayed."""
    src, path = str(tmp_path / "src"), str(tmp_path / "d")
    db = fusedb.open(src, durability="sync")
    try:
        db.put(b"a", b"1")
        db.put(b"b", b"2")
        os.makedirs(path)
        for fn in os.listdir(src):
            if fn.startswith("wal-"):
                shutil.copy(os.path.join(src, fn), path)
        open(os.path.join(path, "LOCK"), "wb").close()
    finally:
        db.close()
    assert sorted(os.listdir(path))[0] == "LOCK" and "MANIFEST" not in os.listdir(path)
    with fusedb.open(path) as db:
        assert dict(db.scan()) == {b"a": b"1", b"b": b"2"}
    assert identity.read(path) is not None


def test_cleanup_deletes_only_its_own_garbage(tmp_path):
    """In a database directory: FuseDB's own temp files and unreferenced segment
    files go; files that only look like them (other names, other contents) stay."""
    path = str(tmp_path / "d")
    with fusedb.open(path) as db:
        db.put(b"k", b"v")
    live = [fn for fn in os.listdir(path) if fn.endswith(".fseg")]
    assert len(live) == 1
    seg_bytes = open(os.path.join(path, live[0]), "rb").read()
    ours = {file_name(0xAA): seg_bytes, "MANIFEST.tmp": b"half", "FUSEDB.tmp": b"{",
            file_name(0xAB) + ".tmp": b"half a segment"}
    foreign = {file_name(0xAC): b"not a segment at all", "seg-1.fseg": seg_bytes,
               "seg-00000000000000AD.fseg": seg_bytes, "notes.tmp": b"mine",
               "x.fseg": seg_bytes, "wal.tmp": b"mine", "seg-zzzzzzzzzzzzzzzz.fseg": b""}
    for fn, data in {**ours, **foreign}.items():
        with open(os.path.join(path, fn), "wb") as f:
            f.write(data)
    with fusedb.open(path) as db:
        assert db.get(b"k") == b"v"
    left = set(os.listdir(path))
    assert not set(ours) & left
    assert set(foreign) <= left
    assert all(open(os.path.join(path, fn), "rb").read() == data for fn, data in foreign.items())


def test_identity_read_write(tmp_path):
    path = str(tmp_path)
    assert identity.read(path) is None
    identity.write(path, {"max_key_size": 100, "max_value_size": 200})
    rec = identity.read(path)
    assert rec["layout"] == {"max_key_size": 100, "max_value_size": 200}
    created = rec["created"]
    identity.write(path, {"max_key_size": 300, "max_value_size": 200})
    rec = identity.read(path)
    assert rec["created"] == created and rec["layout"]["max_key_size"] == 300
    assert os.listdir(path) == [identity.IDENTITY_FILE]      # no temp file left
    doc = json.loads(open(os.path.join(path, identity.IDENTITY_FILE)).read())
    assert set(doc) == {"format", "version", "created", "layout", "checksum"}
    with pytest.raises(InvalidArgumentError):
        identity.write(path, {"max_key_size": 300})


@pytest.mark.parametrize("damage", ["flip", "truncate", "not-json", "edited", "version"])
def test_damaged_identity_file_is_corruption(tmp_path, damage):
    path = str(tmp_path / "d")
    with fusedb.open(path) as db:
        db.put(b"k", b"v")
    fp = os.path.join(path, identity.IDENTITY_FILE)
    raw = bytearray(open(fp, "rb").read())
    if damage == "flip":
        raw[raw.index(b"512")] ^= 0x04           # "512" -> "112": valid JSON, wrong
    elif damage == "truncate":
        raw = raw[:len(raw) // 2]
    elif damage == "not-json":
        raw = bytearray(b"\xff\xfe garbage")
    elif damage == "edited":
        doc = json.loads(raw)
        doc["layout"]["max_key_size"] = 64
        raw = bytearray(json.dumps(doc).encode())
    else:
        doc = json.loads(raw)
        body = {k: v for k, v in doc.items() if k != "checksum"}
        body["version"] = 2
        body["checksum"] = testing.identity_checksum(body)
        raw = bytearray(json.dumps(body).encode())
    with open(fp, "wb") as f:
        f.write(raw)
    with pytest.raises(CorruptionError) as ei:
        fusedb.open(path)
    assert ei.value.path == fp
    assert region.leftovers(region.tag_for(path)) == []
    # identity.write (what fusedb repair calls) makes it open again.
    identity.write(path, {"max_key_size": 512, "max_value_size": 16384})
    with fusedb.open(path) as db:
        assert db.get(b"k") == b"v"


def test_refused_opens_leave_no_shared_memory_or_threads(tmp_path):
    """Leak guard, explicitly: refused opens of every kind leave nothing in /dev/shm."""
    base = str(tmp_path)
    before = fusedb_shm(base)
    make_project(tmp_path / "p")
    for _ in range(3):
        with pytest.raises(NotADatabaseError):
            fusedb.open(str(tmp_path / "p"))
        with pytest.raises(NotADatabaseError):
            fusedb.open(str(tmp_path / "p"), shards=2)
    assert fusedb_shm(base) == before
    assert not os.path.exists(tmp_path / "p" / "LOCK")
