"""Salvage of a damaged database: ``fusedb repair PATH``.

After damage (a flipped byte, a truncated or missing file) ``open`` raises
CorruptionError and ``fusedb check`` names the file; :func:`repair` then keeps
every entry that still verifies, moves every file it takes out of the database
into ``PATH/lost/<UTC time>/`` (nothing is ever deleted), writes what it lost in
``report.json`` there, and leaves a database that opens and passes ``check``.

It follows LevelDB's ``RepairDB`` (leveldb/db/repair.cc, also RocksDB's
"RocksDB Repairer" wiki page): find the files by name, replay every log while
skipping the sections whose checksum does not match, scan every table, set
aside in ``lost/`` the files that cannot be read (and the logs once converted),
and write a new descriptor whose next file number is above every file found and
whose sequence numbers are the largest found. From Redis's
``redis-check-aof --fix`` it takes cutting an incomplete last write off the log.

What is kept, file by file (docs/design.md, "Check and repair"):

* **Segment.** Its checksum covers the whole file (docs/format.md, "Segment
  file"), so the unit of salvage is the segment file: one that fails
  verification (a flipped byte anywhere, truncated, missing) is lost as a
  whole, no entry of it can be trusted. Its entries are recovered from the WAL
  where the WAL still holds them (it is truncated only once a later manifest is
  durable, so recent data often still is).
* **WAL.** Every record whose checksum verifies is kept, also after a damaged
  stretch (each damaged stretch is skipped up to the next 16-byte boundary where
  a whole, valid record starts). A record is one atomic unit (one operation, or
  one shard's part of a batch), and every record holds the key's resulting
  value (counters by value), so skipping one loses exactly its mutations.
* **MANIFEST.** Damaged, missing while segment files exist, or naming a routing
  that breaks the invariants (``problems.routing_problems``): the leaf list is
  rebuilt from the segment files (see fusedb.tools.repair_leaves).

Versions of one key are ordered by seqno, never by file order: a leaf's
seqnos only grow, a split gives both halves the leaf's counter, so every
version of a key carries a larger seqno than the versions before it. Repair
keeps, per key, the entry with the largest seqno among everything that
verifies, tombstones and TTLs included (tombstones are kept, not dropped). So
a surviving tombstone always hides the older values it deleted. What cannot be
guaranteed: a key whose *newest* version was in a lost part reads back its
previous version if one survives (and a key deleted in a lost part comes back);
and, when the manifest is lost, which segment files were live is inferred (see
fusedb.tools.repair_leaves._consumers): entries of a file a merge had replaced that lie outside the
key span of the merge's output are kept and listed as ``uncertain`` (that merge
may have deleted them), and a replaced file all of whose entries the merge
overwrote or dropped cannot be told from a live one. The report says where
each can happen.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time

from fusedb.core import manifest
from fusedb.core.fileio import FILE_MODE, fsync_dir, publish
from fusedb.core.manifest import LeafRecord, ManifestData
from fusedb.core.run import Run
from fusedb.core.segment import Segment, file_name, write_segment
from fusedb.errors import CorruptionError, InvalidArgumentError, LockedError
from fusedb.options import Options
from fusedb.runtime import identity
from fusedb.shm import region
from fusedb.tools.check import LOCK_FILE, lock_holders
from fusedb.tools.problems import orphan_problems, range_problems, routing_problems, \
    segment_files, stream_gaps
from fusedb.tools.repair_leaves import LeafPlanner, newest_by_seq
from fusedb.tools.repair_report import LOST_DIR, REPORT_FILE, Lost, RepairReport  # noqa: F401
from fusedb.wal import recovery
from fusedb.wal.reader import decode, list_files, read_file

def repair(path: str) -> RepairReport:
    """Salvage the closed database at ``path`` (see the module docstring).

    Returns a :class:`RepairReport`; a healthy database is left untouched
    (``repaired`` False). Raises LockedError if the database is open (its
    LOCK is held: close it, or wait for the worker processes of a router that
    died, and run repair again), InvalidArgumentError if ``path`` is not a
    directory holding FuseDB files, OSError if the disk fails meanwhile (run
    repair again: every step is safe to repeat)."""
    path = os.path.realpath(path)
    if not os.path.isdir(path):
        raise InvalidArgumentError(f"{path} is not a directory")
    names = os.listdir(path)
    if not (manifest.FILE in names or segment_files(path) or list_files(path)):
        raise InvalidArgumentError(f"{path} holds no FuseDB file (no MANIFEST, segment or "
                                   f"WAL file): nothing to repair")
    fd = _lock(path)
    try:
        return _Repair(path).run()
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _lock(path: str) -> int:
    """Take the database's LOCK as ``open`` does, so that nothing opens it while
    repair runs; LockedError if a process holds it."""
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holders = lock_holders(path) or []
        who = f" (LOCK held by pid {', '.join(map(str, holders))})" if holders else ""
        raise LockedError(f"database {path} is open{who}: repair works only on a closed "
                          f"database; close it (after a router died, wait for its worker "
                          f"processes to exit) and run repair again") from None
    return fd


class _Repair(LeafPlanner):
    """One run of :func:`repair`, in the calling thread, holding the database's
    LOCK (no other process has it open). Reads what is there (:meth:`run`,
    :meth:`_read_wal`), has the new leaf list made (LeafPlanner, which calls
    :meth:`_write` for each new segment), then publishes (:meth:`_publish`)."""

    def __init__(self, path: str):
        self.path = path
        self.report = RepairReport(path)
        self.segs: dict[int, Segment | CorruptionError] = {}
        self.lost_dir: str | None = None

    # -- what is there ----------------------------------------------------------------

    def run(self) -> RepairReport:
        path, rep = self.path, self.report
        # A crashed run's WAL rings hold acknowledged records no file has: append
        # them to the WAL first, exactly as open does, then drop the objects
        # (holding LOCK proves no process uses them).
        tag = region.tag_for(path)
        rep.ring_bytes = recovery.salvage(tag, path)
        region.remove_leftovers(tag)
        try:
            raw = self._read(manifest.FILE)
            man, man_error = None, None
            if raw is not None:
                try:
                    man = manifest.parse(raw, os.path.join(path, manifest.FILE))
                except CorruptionError as e:
                    man_error = str(e)
            routing = routing_problems(man) if man is not None else []
            seg_files = segment_files(path)
            named = [s for lf in man.leaves for s in lf.segs] if man is not None else []
            # Without a valid manifest the leaves are rebuilt from the segment files:
            # those it names if only its routing is wrong, else all of them.
            rebuild = man is None or bool(routing)
            cands = sorted(set(named) if man is not None else set(seg_files))
            for segid in cands if rebuild else named:
                self._open_segment(segid)
            if not rebuild:
                # A segment whose keys lie outside its leaf's range breaks routing too.
                for i, lf in enumerate(man.leaves):
                    for segid in lf.segs:
                        if isinstance(self.segs[segid], Segment):
                            routing += range_problems(man, i, self.segs[segid])
                if routing:
                    rebuild = True
                    for segid in cands:
                        self._open_segment(segid)
            wfs, wal_lost = self._read_wal()
            runs = [decode([wf]) for wf in wfs]
            # No manifest, yet segment files: lost if they hold what the WAL does
            # not; else the database crashed before its first manifest (open
            # rebuilds it from the WAL).
            orphans = orphan_problems(path, seg_files, runs) if man is None and seg_files \
                else []
            ident = _identity_state(path)
            damaged = (man_error is not None or bool(orphans) or bool(routing)
                       or bool(wal_lost) or ident[0] == "damaged"
                       or any(not isinstance(self.segs[s], Segment) for s in named))
            if not damaged:
                return rep
            self._start(man)
            if man_error is not None or orphans:
                rep.lost.append(Lost(manifest.FILE, "manifest",
                                     man_error or "missing: segment files hold entries the "
                                                  "WAL does not",
                                     note="the leaf list is rebuilt from the segment files; "
                                          "no entry is lost by this alone"))
            elif routing:
                rep.lost.append(Lost(manifest.FILE, "manifest",
                                     "routing invariants broken: " + "; ".join(routing),
                                     note="the leaf list is rebuilt from the segment files it "
                                          "names"))
            rep.lost += wal_lost
            rep.wal_mutations = sum(len(r) for r in runs)
            wal = newest_by_seq(runs)
            if rebuild:
                new = self._rebuild_leaves(cands, wal, man)
            else:
                new = self._fix_leaves(man, wal)
                rep.manifest = f"kept from the MANIFEST ({len(new)} leaves)"
            del wal, runs
            self._publish(new, man, wfs, ident)
            return rep
        finally:
            for seg in self.segs.values():
                if isinstance(seg, Segment):
                    seg.close()

    def _read(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.path, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _open_segment(self, segid: int) -> None:
        if segid not in self.segs:
            try:
                self.segs[segid] = Segment(os.path.join(self.path, file_name(segid)), segid)
            except CorruptionError as e:
                self.segs[segid] = e

    def _read_wal(self) -> tuple[list, list[Lost]]:
        """Every WAL file framed in salvage mode, and what could not be read."""
        wfs, lost = [], []
        for _shard, files in sorted(list_files(self.path).items()):
            read = []
            for i, (no, fpath) in enumerate(files):
                damaged: list[tuple[int, int]] = []
                wf = read_file(fpath, last=i == len(files) - 1, damaged=damaged)
                name = os.path.basename(fpath)
                for a, b in damaged:
                    what = "file header" if (a, b) == (0, min(64, len(wf.data))) else "records"
                    lost.append(Lost(name, "wal", f"damaged {what} at offsets {a}..{b}",
                                     bytes=b - a,
                                     note="the mutations in it are unknown; every record "
                                          "after it that verifies is kept"))
                if wf.torn:
                    lost.append(Lost(name, "wal", f"torn tail at offset {wf.end}",
                                     bytes=len(wf.data) - wf.end,
                                     note="an incomplete last write, cut off as open would "
                                          "(never acknowledged as durable, unless the file "
                                          "was truncated by damage)"))
                wfs.append(wf)
                read.append((no, wf))
            for a, b, n, msg in stream_gaps(read):
                lost.append(Lost(b, "wal", msg, bytes=n or 0,
                                 note=f"records between {a} and {b} are missing (a WAL file "
                                      f"removed or cut short); their mutations are unknown"))
        return wfs, lost

    # -- writing -------------------------------------------------------------------

    def _start(self, man: ManifestData | None) -> None:
        """Create this repair's ``lost/<UTC time>`` directory; new segment ids
        start above every id in use, named (even if missing) or present."""
        base = os.path.join(self.path, LOST_DIR)
        os.makedirs(base, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        d, n = os.path.join(base, stamp), 1
        while os.path.exists(d):
            n += 1
            d = os.path.join(base, f"{stamp}-{n}")
        os.mkdir(d)
        self.lost_dir = self.report.lost_dir = d
        self.report.repaired = True
        self.replaced: list[int] = []   # segment files whose entries new ones hold
        self.why: dict[str, str] = {}   # why a replaced file is set aside, if special
        self.written: list[int] = []
        used = _all_seg_ids(self.path)
        if man is not None:
            used += [s for lf in man.leaves for s in lf.segs] + [man.next_seg - 1]
        self.next_id = 1 + max([0] + used)

    def _write(self, out: Run, inputs: list[int]) -> int | None:
        """Write sorted, unique ``out`` as a new segment (None if it is empty);
        ``inputs`` are the files it replaces."""
        self.replaced += inputs
        if not len(out):
            return None
        segid = self.next_id
        self.next_id += 1
        write_segment(os.path.join(self.path, file_name(segid)), out)
        self.written.append(segid)
        return segid

    def _publish(self, leaves: list[LeafRecord], man: ManifestData | None, wfs: list,
                 ident: tuple) -> None:
        """Make the repaired database durable, in an order a crash anywhere
        leaves repairable: new segments; the old manifest linked into lost/;
        damaged segment files moved; the new manifest; then the WAL files and the
        replaced segment files moved; the report; the identity file."""
        rep, path = self.report, self.path
        named = {s for lf in leaves for s in lf.segs}
        next_seg = max([self.next_id] + ([man.next_seg] if man is not None else []))
        options = dict(man.options) if man is not None else {}
        data = ManifestData(leaves, next_seg, options)
        if os.path.exists(os.path.join(path, manifest.FILE)):
            _link_or_copy(os.path.join(path, manifest.FILE),
                          os.path.join(self.lost_dir, manifest.FILE))
            rep.moved.append({"file": manifest.FILE, "why": "the manifest before repair"})
        for x in rep.lost:
            if x.kind == "segment" and os.path.exists(os.path.join(path, x.file)):
                self._move(x.file, "fails verification")
        fsync_dir(self.lost_dir)
        manifest.write(path, data)
        for wf in wfs:
            self._move(os.path.basename(wf.path), "folded into segments by repair")
        for segid in sorted(set(self.replaced) - named):
            name = file_name(segid)
            if os.path.exists(os.path.join(path, name)):
                self._move(name, self.why.get(name, "its entries were rewritten into a new "
                                                    "segment by repair"))
        fsync_dir(path)
        fsync_dir(self.lost_dir)
        rep.leaves = len(leaves)
        rep.segments = len(named)
        rep.new_segments = len(named & set(self.written))
        longest = max([0] + [len(lf.lo) for lf in leaves])
        longest_value = 0
        for segid in named:
            seg = self.segs.get(segid)
            if not isinstance(seg, Segment):
                seg = Segment(os.path.join(path, file_name(segid)), segid)
                self.segs[segid] = seg
            rep.entries += seg.count
            if seg.count:
                run = seg.to_run()
                longest = max(longest, int(run.klen.max()))
                longest_value = max(longest_value, int(run.vlen.max()))
        _fix_identity(path, self.lost_dir, ident, longest, longest_value, rep)
        body = json.dumps(rep.to_dict(), indent=1, sort_keys=True).encode() + b"\n"
        publish(os.path.join(self.lost_dir, REPORT_FILE), [body])

    def _move(self, name: str, why: str) -> None:
        os.rename(os.path.join(self.path, name), os.path.join(self.lost_dir, name))
        self.report.moved.append({"file": name, "why": why})


def _all_seg_ids(path: str) -> list[int]:
    """Ids of every segment file in the directory and in its lost/ directories
    (a new id never reuses the name of a file set aside)."""
    ids = list(segment_files(path))
    base = os.path.join(path, LOST_DIR)
    if os.path.isdir(base):
        for sub in os.listdir(base):
            if os.path.isdir(os.path.join(base, sub)):
                ids += segment_files(os.path.join(base, sub))
    return ids


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# -- the identity file -------------------------------------------------------------------

def _identity_state(path: str) -> tuple[str, dict | None]:
    """("ok" | "missing" | "damaged", the recorded layout or None), from the
    identity file (fusedb/runtime/identity.py). A missing file is no damage by itself
    (``open`` adopts a database of an earlier version and writes it); repair
    writes one whenever it publishes."""
    try:
        rec = identity.read(path)
    except CorruptionError:
        return "damaged", None
    return ("missing", None) if rec is None else ("ok", rec["layout"])


def _fix_identity(path: str, lost_dir: str, state: tuple, longest_key: int,
                  longest_value: int, rep: RepairReport) -> None:
    """Write a missing identity file, or replace a damaged one (moved to lost/
    first), recording the larger of the defaults and the longest key (or leaf
    bound) and value the repaired database holds, in bytes: every stored entry
    fits, and ``open`` enlarges the record again if it is opened with larger
    limits (fusedb.runtime.identity.reconcile)."""
    kind, _layout = state
    if kind not in ("missing", "damaged"):
        return
    name = identity.IDENTITY_FILE
    if kind == "damaged":
        os.rename(os.path.join(path, name), os.path.join(lost_dir, name))
        rep.moved.append({"file": name, "why": "fails verification"})
        rep.lost.append(Lost(name, "identity", kind,
                             note="recreated from the entries the database holds"))
    defaults = Options()
    identity.write(path, {"max_key_size": max(defaults.max_key_size, longest_key),
                          "max_value_size": max(defaults.max_value_size, longest_value)})
