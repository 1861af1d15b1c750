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
  that breaks the invariants (``check.routing_problems``): the leaf list is
  rebuilt from the segment files (see :func:`_rebuild_leaves`).

Versions of one key are ordered by seqno, never by file order: a leaf's
seqnos only grow, a split gives both halves the leaf's counter, so every
version of a key carries a larger seqno than the versions before it. Repair
keeps, per key, the entry with the largest seqno among everything that
verifies, tombstones and TTLs included (tombstones are kept, not dropped). So
a surviving tombstone always hides the older values it deleted. What cannot be
guaranteed: a key whose *newest* version was in a lost part reads back its
previous version if one survives (and a key deleted in a lost part comes back);
and, when the manifest is lost, which segment files were live is inferred (see
:func:`_consumers`): entries of a file a merge had replaced that lie outside the
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
from dataclasses import asdict, dataclass, field

import numpy as np

from fusedb.runtime import identity
from fusedb.core import manifest
from fusedb.tools.check import LOCK_FILE, leaf_name, lock_holders, orphan_problems, range_problems, \
    routing_problems, segment_files, show, stream_gaps
from fusedb.core.entry import key_hash
from fusedb.errors import CorruptionError, InvalidArgumentError, LockedError
from fusedb.core.fileio import fsync_dir, publish
from fusedb.core.manifest import LeafRecord, ManifestData
from fusedb.core.merge import cut, key_index, newest_per_key
from fusedb.options import MAX_SEGMENTS_LIMIT, Options
from fusedb.core.run import Run, concat
from fusedb.core.segment import Segment, file_name, write_segment
from fusedb.shm import region
from fusedb.wal import recovery
from fusedb.wal.reader import decode, fill_hashes, list_files, read_file

#: Subdirectory of the database that receives every file repair takes out.
LOST_DIR = "lost"
#: The report of one repair, inside its ``lost/<time>/`` directory.
REPORT_FILE = "report.json"


@dataclass
class Lost:
    """One part of the database whose entries could not all be kept.

    ``lo``/``hi`` bound the keys it could hold, ``[lo, hi)`` (``hi`` None: no
    upper bound); both None when unknown. ``entries`` is how many entries it
    held (None: unknown); ``verified`` says whether that count and ``claims``
    (what its damaged header says: entry count, first and last key, seqnos)
    come from verified bytes. ``restored`` counts entries of its key range
    recovered from the WAL instead."""
    file: str              # file name in the database directory
    kind: str              # "segment", "wal", "manifest" or "identity"
    problem: str           # what is wrong with it
    lo: bytes | None = None
    hi: bytes | None = None
    entries: int | None = None
    verified: bool = False
    claims: str = ""
    bytes: int = 0         # bytes of the file that could not be used
    restored: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lo"] = None if self.lo is None else self.lo.hex()
        d["hi"] = None if self.hi is None else self.hi.hex()
        return d

    def line(self) -> str:
        parts = [f"LOST {self.file}: {self.problem}"]
        if self.lo is not None:
            parts.append(f"keys in [{show(self.lo)}, {'+inf' if self.hi is None else show(self.hi)})")
        if self.entries is not None:
            parts.append(f"{self.entries} entries" + ("" if self.verified else
                                                       " (its header says; unverified)"))
        elif self.kind in ("segment", "wal"):
            parts.append("entry count unknown")
        if self.claims:
            parts.append(self.claims)
        if self.bytes:
            parts.append(f"{self.bytes} bytes unusable")
        if self.restored:
            parts.append(f"{self.restored} entries of its range recovered from the WAL")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


@dataclass
class RepairReport:
    """What :func:`repair` found and did. ``repaired`` False: nothing was damaged
    and nothing was changed (``lost`` and ``moved`` are empty)."""
    path: str
    repaired: bool = False
    lost_dir: str | None = None                         # where taken-out files went
    lost: list[Lost] = field(default_factory=list)      # what could not be kept
    moved: list[dict] = field(default_factory=list)     # {"file", "why"} per file set aside
    manifest: str = "kept"                              # how the leaf list was obtained
    leaves: int = 0                                     # leaves of the repaired database
    segments: int = 0                                   # segment files it names
    new_segments: int = 0                               # of which written by repair
    entries: int = 0                                    # entries in those segments
    wal_mutations: int = 0                              # WAL mutations that verified
    ring_bytes: int = 0                                 # salvaged from a crashed run's rings
    warnings: list[str] = field(default_factory=list)   # what cannot be guaranteed
    uncertain: list[str] = field(default_factory=list)  # keys (hex) that may be resurrected

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lost"] = [x.to_dict() for x in self.lost]
        return d

    def lines(self) -> list[str]:
        """The human-readable report (``fusedb repair`` without ``--json``)."""
        if not self.repaired:
            out = [f"{self.path}: nothing to repair (every file verifies); nothing changed"]
            if self.ring_bytes:
                out.append(f"  {self.ring_bytes} bytes of WAL left in shared memory by a "
                           f"crashed run were written to the WAL (as the next open would)")
            return out
        out = [f"{self.path}: repaired"]
        out += ["  " + x.line() for x in self.lost]
        out.append(f"  leaf list: {self.manifest}")
        out.append(f"  kept: {self.leaves} leaves, {self.segments} segments ({self.new_segments} "
                   f"written by repair), {self.entries} entries; {self.wal_mutations} WAL "
                   f"mutations verified and folded in")
        if self.ring_bytes:
            out.append(f"  {self.ring_bytes} bytes of WAL salvaged from shared memory")
        out.append(f"  set aside in {self.lost_dir}: "
                   + ", ".join(m["file"] for m in self.moved))
        out += ["  warning: " + w for w in self.warnings]
        out.append(f"  the database opens again; {REPORT_FILE} in {self.lost_dir} has this "
                   f"report; delete that directory once nothing in it is needed")
        return out


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
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
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


def _newest_by_seq(runs: list[Run]) -> Run:
    """One entry per key, the one with the largest seqno, sorted by key; entries
    of equal seqno are the same mutation (a segment and the WAL record it came
    from). Tombstones and expired entries are kept."""
    allr, _rank = concat(runs)
    if not len(allr):
        return allr
    return fill_hashes(newest_per_key(allr.take(np.argsort(allr.seq, kind="stable"))))


def _claims(path: str) -> tuple[int | None, str]:
    """What a segment file that fails verification says about itself, if its
    header and footer still parse (unverified): (entry count, description)."""
    try:
        seg = Segment(path, verify=False)
    except (CorruptionError, OSError, ValueError):
        return None, ""
    try:
        if not seg.count:
            return 0, "empty"
        return seg.count, (f"keys {show(seg.key(0))}..{show(seg.key(seg.count - 1))}, "
                           f"seqnos {seg.min_seq}..{seg.max_seq} (unverified)")
    finally:
        seg.close()


class _Repair:
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
            wal = _newest_by_seq(runs)
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

    # -- the new leaves ----------------------------------------------------------------

    def _fix_leaves(self, man: ManifestData, wal: Run) -> list[LeafRecord]:
        """The manifest's leaves, minus the segments that fail verification, with
        the WAL folded in: for a leaf that lost a segment every WAL entry of its
        range (older ones may restore lost entries), otherwise only entries newer
        than its materialised seqno (as recovery replays)."""
        out = []
        for i, lf in enumerate(man.leaves):
            hi = man.leaves[i + 1].lo if i + 1 < len(man.leaves) else None
            good = [s for s in lf.segs if isinstance(self.segs[s], Segment)]
            bad = [s for s in lf.segs if s not in good]
            part = cut(wal, lf.lo, hi)
            if not bad:
                part = part.take(np.flatnonzero(part.seq > np.uint64(lf.seq)))
            segs, seq, restored = good, lf.seq, 0
            if len(part):
                merged = _newest_by_seq([part] + [self.segs[s].to_run() for s in good])
                if bad:
                    restored = _restored(part, lf.seq, merged, [self.segs[s] for s in good])
                new = self._write(merged, good)
                segs = [] if new is None else [new]
                seq = max(seq, int(part.seq.max()))
            for n, segid in enumerate(bad):
                err = self.segs[segid]
                count, claims = _claims(err.path)
                older = [file_name(s) for s in good if lf.segs.index(s) > lf.segs.index(segid)]
                note = f"in {leaf_name(man, i)}"
                if older:
                    note += (f"; keys whose newest version it held read back their previous "
                             f"version from {', '.join(older)} (a key it deleted comes back)")
                self.report.lost.append(Lost(file_name(segid), "segment", str(err), lf.lo, hi,
                                             count, False, claims,
                                             _size(err.path), restored if n == 0 else 0, note))
            out.append(LeafRecord(lf.lo, seq, segs, lf.shard))
        if any(x.kind == "segment" for x in self.report.lost):
            self.report.warnings.append(
                "a lost segment's keys read back their newest surviving version: from an "
                "older segment or the WAL if one holds them, else they are gone")
        return out

    def _rebuild_leaves(self, cands: list[int], wal: Run,
                        man: ManifestData | None) -> list[LeafRecord]:
        """Leaves rebuilt from segment files ``cands`` (ids) and the WAL entries.

        Segments that verify are grouped into clusters of overlapping key spans
        (each live leaf's segments overlap only each other; a file a merge
        replaced overlaps its successors); each cluster becomes a leaf whose
        lower bound is its smallest key (the first leaf's is b""). A cluster whose
        segments are layers (each holding only mutations newer than the next, as
        partial merges leave a leaf; at most MAX_SEGMENTS_LIMIT) and that has no WAL
        entries keeps its files; otherwise the leaf's entries (newest seqno per
        key, minus what :func:`_consumers` masks) are written as one new segment.
        Files that fail verification are lost."""
        rep = self.report
        live = []
        for segid in cands:
            seg = self.segs[segid]
            if isinstance(seg, Segment):
                if seg.count:
                    live.append(seg)
                else:
                    self.replaced.append(segid)
                continue
            count, claims = _claims(seg.path)
            rep.lost.append(Lost(file_name(segid), "segment", str(seg), entries=count,
                                 claims=claims, bytes=_size(seg.path),
                                 note="its leaf is unknown (the manifest is lost); it may also "
                                      "have been a file a merge had replaced"
                                 if man is None else "named by the broken manifest"))
        live.sort(key=lambda s: s.key(0))
        clusters: list[list[Segment]] = []
        top = b""
        for seg in live:
            if clusters and seg.key(0) <= top:
                clusters[-1].append(seg)
                top = max(top, seg.key(seg.count - 1))
            else:
                clusters.append([seg])
                top = seg.key(seg.count - 1)
        bounds = [b""] + [c[0].key(0) for c in clusters[1:]]
        if not clusters:
            clusters = [[]]
        shards = man.options.get("shards", 1) if man is not None else 1
        out = []
        dropped = 0
        uncertain: list[bytes] = []
        for j, (lo, cluster) in enumerate(zip(bounds, clusters)):
            hi = bounds[j + 1] if j + 1 < len(bounds) else None
            part = cut(wal, lo, hi)
            masks = _consumers(cluster)
            layers = sorted(cluster, key=lambda g: g.min_seq, reverse=True)
            if not len(part) and not masks and len(layers) <= MAX_SEGMENTS_LIMIT and \
                    all(a.min_seq > b.max_seq for a, b in zip(layers, layers[1:])):
                # Layers of one leaf as partial merges left them (each holds only
                # mutations newer than the next): kept as they are, newest first.
                out.append(LeafRecord(lo, layers[0].max_seq, [g.segid for g in layers],
                                      j * shards // len(bounds)))
                continue
            runs = [part]
            stale: dict[bytes, int] = {}      # entries a replaced file keeps: key -> seqno
            for seg in cluster:
                run = seg.to_run()
                if masks.get(seg.segid):
                    keep = _unmasked(run, masks[seg.segid])
                    dropped += len(run) - len(keep)
                    self.why[file_name(seg.segid)] = "a later merge had replaced it (stale)"
                    run = run.take(keep)
                    stale.update((run.key(n), int(run.seq[n])) for n in range(len(run)))
                runs.append(run)
            merged = _newest_by_seq(runs)
            for k, sq in stale.items():
                n = key_index(merged, k)
                if n < len(merged) and merged.key(n) == k and int(merged.seq[n]) == sq:
                    uncertain.append(k)
            seq = max([seg.max_seq for seg in cluster]
                      + [int(part.seq.max()) if len(part) else 0])
            new = self._write(merged, [s.segid for s in cluster])
            out.append(LeafRecord(lo, seq, [] if new is None else [new],
                                  j * shards // len(bounds)))
        rep.manifest = (f"rebuilt from {len(live)} segment files ({len(out)} leaves); "
                        f"{dropped} entries of files later merges had replaced dropped")
        rep.warnings.append(
            "the leaf list was rebuilt without a valid manifest: which segment files were "
            "live is inferred from key ranges and seqnos (see docs/design.md, \"Check and "
            "repair\")")
        if uncertain:
            rep.uncertain = [k.hex() for k in uncertain]
            rep.warnings.append(
                f"{len(uncertain)} entries kept from files a later merge had replaced lie "
                f"outside the key span of the files that replaced them and have no newer "
                f"version: that merge may have dropped them as deleted or expired, or they "
                f"belong to a split half that was never written; kept: "
                + ", ".join(show(k) for k in uncertain[:10])
                + (" ..." if len(uncertain) > 10 else ""))
        return out

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


def _restored(part: Run, seq: int, merged: Run, good: list[Segment]) -> int:
    """How many entries of a leaf that lost a segment came back from the WAL:
    entries of ``part`` (its WAL entries) materialised before (seqno <= the
    leaf's ``seq``) that won in ``merged`` and that no surviving segment holds."""
    n = 0
    for i in np.flatnonzero(part.seq <= np.uint64(seq)):
        k, sq = part.key(int(i)), int(part.seq[i])
        j = key_index(merged, k)
        if int(merged.seq[j]) != sq:
            continue                     # a newer version won
        h = key_hash(k)
        if not any((e := seg.find(k, h)) >= 0 and seg.seq[e] == sq for seg in good):
            n += 1
    return n


def _consumers(cluster: list[Segment]) -> dict[int, list[tuple[bytes, bytes]]]:
    """For each segment of ``cluster``, the key spans [first, last] of the newer
    segments that *consumed* it: a merge output N replaced segment C if N has a
    larger id (ids only grow), their key spans overlap, and N holds an entry no
    newer than C's newest (N.min_seq <= C.max_seq). A segment layered on top of C
    by a partial merge holds only newer mutations (N.min_seq > C.max_seq), so
    it does not mask C. Entries of C inside a consumer's span are dropped: that
    merge carried them over, or dropped them with a newer tombstone or expiry
    (keeping them would resurrect deleted keys). A consumer all of whose
    entries are newer than C's cannot be recognised (module docstring)."""
    masks: dict[int, list[tuple[bytes, bytes]]] = {}
    spans = {s.segid: (s.key(0), s.key(s.count - 1)) for s in cluster}
    for c in cluster:
        for n in cluster:
            if n.segid > c.segid and n.min_seq <= c.max_seq and \
                    spans[n.segid][0] <= spans[c.segid][1] and spans[c.segid][0] <= spans[n.segid][1]:
                masks.setdefault(c.segid, []).append(spans[n.segid])
    return masks


def _unmasked(run: Run, spans: list[tuple[bytes, bytes]]) -> np.ndarray:
    """Indexes of the entries of sorted ``run`` outside every span [a, b]."""
    keep = np.ones(len(run), bool)
    for a, b in spans:
        keep[key_index(run, a):key_index(run, b + b"\x00")] = False
    return np.flatnonzero(keep)


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


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# -- the identity file -------------------------------------------------------------------

def _identity_state(path: str) -> tuple[str, dict | None]:
    """("ok" | "missing" | "damaged", the recorded layout or None), from the
    identity file (fusedb/identity.py). A missing file is no damage by itself
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
