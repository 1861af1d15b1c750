"""How ``fusedb repair`` makes the new leaf list (docs/design.md, "Check and
repair"): the manifest's leaves minus what fails verification, with the WAL
folded in (:meth:`LeafPlanner._fix_leaves`), or, without a valid manifest,
leaves rebuilt from the segment files' key spans and seqnos
(:meth:`LeafPlanner._rebuild_leaves`). Versions of a key are ordered by seqno
(:func:`newest_by_seq`)."""

from __future__ import annotations

import os

import numpy as np

from fusedb.core.entry import key_hash
from fusedb.core.layout import MAX_SEGS
from fusedb.core.manifest import LeafRecord, ManifestData
from fusedb.core.merge import cut, key_index, newest_per_key
from fusedb.core.run import Run, concat
from fusedb.core.segment import Segment, file_name
from fusedb.errors import CorruptionError
from fusedb.tools.problems import leaf_name, show
from fusedb.tools.repair_report import Lost
from fusedb.wal.reader import fill_hashes


def newest_by_seq(runs: list[Run]) -> Run:
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


class LeafPlanner:
    """The leaf-planning half of a repair run (fusedb.tools.repair._Repair, one
    thread, holding LOCK). Uses the run's ``segs`` (id -> Segment or the
    CorruptionError opening it), ``report``, ``replaced`` and ``why`` (files
    set aside, and why), and its ``_write(run, inputs)`` (a new segment)."""

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
                merged = newest_by_seq([part] + [self.segs[s].to_run() for s in good])
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
        partial merges leave a leaf; at most MAX_SEGS) and that has no WAL
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
            if not len(part) and not masks and len(layers) <= MAX_SEGS and \
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
            merged = newest_by_seq(runs)
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
                    spans[n.segid][0] <= spans[c.segid][1] and \
                    spans[c.segid][0] <= spans[n.segid][1]:
                masks.setdefault(c.segid, []).append(spans[n.segid])
    return masks


def _unmasked(run: Run, spans: list[tuple[bytes, bytes]]) -> np.ndarray:
    """Indexes of the entries of sorted ``run`` outside every span [a, b]."""
    keep = np.ones(len(run), bool)
    for a, b in spans:
        keep[key_index(run, a):key_index(run, b + b"\x00")] = False
    return np.flatnonzero(keep)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
