"""Verification and dumping of a database directory, built on the same readers the
engine uses. Behind ``fusedb check PATH`` and ``fusedb dump PATH``.

Neither takes the database's lock, attaches to its shared memory or writes
anything, so both may run while the database is open (docs/design.md, "Check
and repair").

**A live database is checked on a consistent snapshot.** A running database
replaces its manifest (atomically, by rename) after every round of merges and
only then deletes the segment files the new manifest no longer names
(invariant 4). So the files named by the manifest *currently on disk* always
exist. :func:`check` reads the manifest's bytes once, opens (maps) every
segment they name before verifying any, and if one is missing reads the
manifest again: if it changed, a merge replaced the file meanwhile and the
snapshot is taken again; only a file missing while the manifest that names it
is still current is reported. An open mapping keeps a file readable after a
merge deletes it, so verification then runs on the snapshot at leisure. This
takes no lock of the database: a check process killed at any moment leaves
nothing behind (a lock it held would wedge the writers), and it works the same
for an embedded database open in another process, whose locks are thread
locks out of reach. WAL files a running database deletes (truncation) or is
still appending to (a partial last record is a *torn tail* while it is being
written) are not reported while the database is open.

This module holds the live side (is the database open, the snapshot, the
check itself) and ``dump``; the checks of what was read are
fusedb.tools.problems.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from collections.abc import Iterator

from fusedb.core import manifest
from fusedb.core.entry import KIND_DEL, KIND_INT
from fusedb.core.segment import Segment, file_name
from fusedb.errors import CorruptionError, FuseDBError
from fusedb.runtime.dirlock import lock_holders
from fusedb.tools.problems import (KEY_SIZE_LIMIT, orphan_problems,  # noqa: F401
                                   recorded_max_key_size, routing_problems, segment_files,
                                   segment_problems, stream_gaps, wal_runs)
from fusedb.wal.reader import decode, list_files, read_file

LOCK_FILE = "LOCK"     # fusedb.runtime.identity.LOCK_FILE

#: Snapshots tried before :class:`CheckBusyError` (each retry follows a manifest
#: change that replaced a file between reading the manifest and opening it).
SNAPSHOT_ATTEMPTS = 100


class CheckBusyError(FuseDBError):
    """Raised by :func:`check` when no consistent snapshot could be taken: the
    manifest of the live database changed, replacing a file it named, on each of
    ``SNAPSHOT_ATTEMPTS`` tries. Nothing is known to be wrong; check again later
    (``fusedb check`` exits with status 3). Raised on the checking thread, which
    holds no lock of the database, and leaves nothing open."""


# -- is the database open? ----------------------------------------------------------------

def is_open(path: str) -> bool:
    """Whether a process holds the database's LOCK (True when it cannot be told)."""
    holders = lock_holders(path)
    return holders is None or bool(holders)


# -- snapshot -----------------------------------------------------------------------------

@dataclass
class Snapshot:
    """One manifest and the segments it names (segment id -> Segment, or the
    CorruptionError opening it raised), opened before any was verified. Made by
    :func:`snapshot` for one :func:`check` in the checking process (``fusedb
    check``), which takes no lock of the database; owned by that thread, closed
    by it."""
    raw: bytes | None                       # the manifest's bytes (None: no MANIFEST)
    man: manifest.ManifestData | None       # None: no MANIFEST, or ``error``
    error: CorruptionError | None = None    # the manifest fails verification
    segments: dict[int, Segment | CorruptionError] = field(default_factory=dict)

    def close(self) -> None:
        for seg in self.segments.values():
            if isinstance(seg, Segment):
                seg.close()


def _read_raw(path: str) -> bytes | None:
    try:
        with open(os.path.join(path, manifest.FILE), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _named(path: str, mpath: str) -> set[int]:
    """Segment ids named by the manifest on disk now (empty if it is unreadable)."""
    raw = _read_raw(path)
    try:
        man = manifest.parse(raw, mpath) if raw is not None else None
    except CorruptionError:
        return set()
    return {s for lf in man.leaves for s in lf.segs} if man is not None else set()


def snapshot(path: str, attempts: int = SNAPSHOT_ATTEMPTS) -> Snapshot:
    """The manifest of ``path`` and every segment it names, opened (header and
    footer checked, not the checksum) while that manifest was current: consistent
    even while the database runs (see the module docstring). Raises
    CheckBusyError after ``attempts`` manifest changes that each removed a file."""
    mpath = os.path.join(path, manifest.FILE)
    for attempt in range(attempts):
        raw = _read_raw(path)
        if raw is None:
            return Snapshot(None, None)
        try:
            man = manifest.parse(raw, mpath)
        except CorruptionError as e:
            return Snapshot(raw, None, e)
        snap = Snapshot(raw, man)
        missing = set()
        for lf in man.leaves:
            for segid in lf.segs:
                if segid in snap.segments:
                    continue
                try:
                    snap.segments[segid] = Segment(os.path.join(path, file_name(segid)), segid,
                                                   verify=False)
                except CorruptionError as e:
                    snap.segments[segid] = e
                    if not os.path.exists(e.path):
                        missing.add(segid)
        if not missing or missing <= _named(path, mpath):
            # A file missing while the manifest still names it was named all along
            # (an id is never named again once dropped): really missing.
            return snap
        snap.close()                 # a merge replaced a named file meanwhile: again
        time.sleep(min(0.001 * attempt, 0.05))
    raise CheckBusyError(f"could not take a consistent snapshot of {path}: its manifest "
                         f"changed {attempts} times while the files it names were opened "
                         f"(a very busy database); nothing is known to be wrong, check "
                         f"again later")


# -- check --------------------------------------------------------------------------------

def check(path: str) -> list[str]:
    """Every problem found in the database at ``path`` (empty list: healthy).

    Verifies the manifest (checksum, routing invariants: :func:`routing_problems`),
    every segment it names (whole-file checksum, keys strictly sorted and inside
    the leaf's range [lo, next lo)) and every WAL file (each record's checksum;
    a torn tail is reported only if the database is closed). Safe on an open
    database (module docstring). Raises CheckBusyError (see :func:`snapshot`)."""
    live = is_open(path)
    problems: list[str] = []
    max_key, id_problems = recorded_max_key_size(path)
    problems += id_problems
    snap = snapshot(path)
    try:
        if snap.error is not None:
            problems.append(str(snap.error))
        elif snap.man is None and not live:
            # A database that crashed before its first manifest (written after the
            # first round of merges, or at close) is its WAL alone: healthy, and
            # segment files its merges wrote hold only what the WAL holds. Any
            # other segment file means the manifest was lost: open would delete it.
            segs = segment_files(path)
            if segs:
                problems += orphan_problems(path, segs, wal_runs(path))
            elif not list_files(path):
                problems.append(f"no MANIFEST and no WAL in {path} (not a FuseDB database)")
        else:
            problems += routing_problems(snap.man, max_key)
            problems += segment_problems(snap.man, snap.segments)
    finally:
        snap.close()
    soft = []
    for _shard, files in sorted(list_files(path).items()):
        read = []
        for i, (no, fpath) in enumerate(files):
            try:
                wf = read_file(fpath, last=i == len(files) - 1)
                decode([wf])
            except FileNotFoundError:
                continue       # deleted since listed: truncated by the running database
            except CorruptionError as e:
                problems.append(str(e))
                wf = None
            read.append((no, wf))
            if wf is not None and wf.torn and not live:
                soft.append(f"{fpath}: torn tail at offset {wf.end} (repaired at the "
                            f"next open; it was never acknowledged as durable)")
        if not live:
            soft += [msg for _a, _b, _n, msg in stream_gaps(read)]
    if soft and not is_open(path):     # opened meanwhile: its files are being written
        problems += soft
    return problems


# -- dump ---------------------------------------------------------------------------------

def _fmt(kind: int, value: bytes) -> str:
    if kind == KIND_DEL:
        return "<deleted>"
    if kind == KIND_INT:
        return f"int {int.from_bytes(value[:8], 'little', signed=True)}"
    return repr(value)


def dump(path: str) -> Iterator[str]:
    """Human-readable lines describing the manifest, segments and WAL records."""
    man = manifest.read(path)
    if man is None:
        yield f"no MANIFEST in {path}"
        return
    yield f"MANIFEST next_seg={man.next_seg} options={man.options} leaves={len(man.leaves)}"
    for lf in man.leaves:
        yield f"  leaf lo={lf.lo!r} seq={lf.seq} shard={lf.shard} segments={lf.segs}"
    for lf in man.leaves:
        for segid in lf.segs:
            seg = Segment(os.path.join(path, file_name(segid)), segid)
            try:
                yield f"segment {file_name(segid)}: {seg.count} entries, {seg.size} bytes, " \
                      f"seq {seg.min_seq}..{seg.max_seq}"
                for j in range(seg.count):
                    exp = seg.exp[j]
                    yield (f"  {seg.key(j)!r} seq={seg.seq[j]} {_fmt(seg.kind[j], seg.value(j))}"
                           + (f" exp={exp:.3f}" if exp else ""))
            finally:
                seg.close()
    for shard, files in sorted(list_files(path).items()):
        for i, (_no, fpath) in enumerate(files):
            wf = read_file(fpath, last=i == len(files) - 1)
            run = decode([wf])
            yield (f"wal {os.path.basename(fpath)}: shard {shard}, start {wf.start_pos}, "
                   f"{len(wf.records)} records, {len(run)} mutations"
                   + (f", torn tail at {wf.end}" if wf.torn else ""))
            for j in range(len(run)):
                yield (f"  {run.key(j)!r} seq={int(run.seq[j])} "
                       f"{_fmt(int(run.kind[j]), run.value(j))}")
