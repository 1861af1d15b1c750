"""File checks behind ``fusedb check`` and ``fusedb repair``: the routing a
manifest describes, segments against their leaves, holes in a shard's WAL
stream, segment files no manifest names. Pure functions over what the caller
read; they take no lock and write nothing (fusedb.tools.check takes the
consistent snapshot they run on)."""

from __future__ import annotations

import os

from fusedb.core import manifest
from fusedb.core.layout import MAX_SEGS
from fusedb.core.segment import Segment, file_name
from fusedb.errors import CorruptionError
from fusedb.runtime import identity
from fusedb.wal.format import FILE_HEADER
from fusedb.wal.reader import WalFile, decode, list_files, read_file

#: Largest key any database accepts (Options rejects a larger max_key_size).
KEY_SIZE_LIMIT = 4096


# -- routing invariants --------------------------------------------------------------------

def show(key: bytes, limit: int = 48) -> str:
    """``repr`` of a key or bound, shortened past ``limit`` bytes."""
    if len(key) <= limit:
        return repr(key)
    return f"{key[:limit]!r}... ({len(key)} bytes)"


def leaf_name(man: manifest.ManifestData, i: int) -> str:
    """``leaf i [lo, hi)`` for messages."""
    hi = man.leaves[i + 1].lo if i + 1 < len(man.leaves) else None
    return f"leaf {i} [{show(man.leaves[i].lo)}, {'+inf' if hi is None else show(hi)})"


def routing_problems(man: manifest.ManifestData, max_key_size: int | None = None) -> list[str]:
    """Problems of the manifest's routing (no file is read): the first lower
    bound is empty (minus infinity), bounds strictly increase (sorted, unique),
    every bound is at most ``max_key_size`` bytes (the size recorded with the
    database; :data:`KEY_SIZE_LIMIT` when unknown) since the routing table stores
    bounds in slots of that size, a leaf names at most MAX_SEGS
    segments, no segment is named twice, and shards are in range."""
    out = []
    limit = KEY_SIZE_LIMIT if max_key_size is None else max_key_size
    leaves = man.leaves
    if not leaves:
        return ["MANIFEST lists no leaves (the first leaf, lower bound b'', must exist)"]
    if leaves[0].lo != b"":
        out.append(f"leaf 0: lower bound {show(leaves[0].lo)} is not b'' (the first leaf must "
                   f"start at minus infinity; keys below it have no leaf)")
    owner: dict[int, int] = {}
    shards = man.options.get("shards")
    for i, lf in enumerate(leaves):
        if i and lf.lo <= leaves[i - 1].lo:
            what = "equals" if lf.lo == leaves[i - 1].lo else "is below"
            out.append(f"leaf {i}: lower bound {show(lf.lo)} {what} leaf {i - 1}'s "
                       f"{show(leaves[i - 1].lo)} (bounds must be sorted and unique)")
        if len(lf.lo) > limit:
            out.append(f"leaf {i}: lower bound {show(lf.lo)} is {len(lf.lo)} bytes, longer "
                       f"than max_key_size={limit}")
        if len(lf.segs) > MAX_SEGS:
            out.append(f"leaf {i}: names {len(lf.segs)} segments, more than "
                       f"{MAX_SEGS}")
        if isinstance(shards, int) and not 0 <= lf.shard < shards:
            out.append(f"leaf {i}: shard {lf.shard} out of range (the database has {shards})")
        for segid in lf.segs:
            if segid in owner:
                first = owner[segid]
                where = "twice" if first == i else f"by leaf {first} and leaf {i}"
                out.append(f"segment {file_name(segid)} is named {where} (a segment belongs "
                           f"to one leaf)")
            else:
                owner[segid] = i
    return out


def recorded_max_key_size(path: str) -> tuple[int | None, list[str]]:
    """The max_key_size (bytes) recorded in the database's identity file
    (fusedb/runtime/identity.py), and problems reading it: (None, []) when there is no
    identity file (a database of an earlier version: bounds are then checked
    against KEY_SIZE_LIMIT), (None, [message]) when it is damaged."""
    try:
        rec = identity.read(path)
    except CorruptionError as e:
        return None, [str(e)]
    return (None if rec is None else rec["layout"]["max_key_size"]), []


def stream_gaps(files: list[tuple[int, WalFile | None]]) -> list[tuple[str, str, int | None, str]]:
    """Holes in one shard's WAL stream: ``files`` are its (file number, framed
    file or None if unreadable), in number order. Within one run the files are
    consecutive numbers, each starting at the stream position where the one
    before ends, and truncation deletes only from the front; a run starts at
    position 0 (files before the last such file are older runs' leftovers, not
    checked). Returns (file before, file after, bytes missing or None, message)."""
    first = max((i for i, (_no, wf) in enumerate(files)
                 if wf is not None and wf.file_no >= 0 and wf.start_pos == 0), default=0)
    out = []
    for (na, a), (nb, b) in zip(files[first:], files[first + 1:]):
        if a is None or b is None:
            continue
        an, bn = os.path.basename(a.path), os.path.basename(b.path)
        if nb != na + 1:
            out.append((an, bn, None, f"WAL files {na + 1}..{nb - 1} missing between {a.path} "
                                      f"and {b.path}"))
        elif a.file_no >= 0 and b.file_no >= 0:
            end = a.start_pos + len(a.data) - FILE_HEADER.size
            if end != b.start_pos:
                out.append((an, bn, b.start_pos - end,
                            f"{a.path} ends at WAL stream position {end} but {b.path} starts "
                            f"at {b.start_pos}: {b.start_pos - end} bytes missing"))
    return out


def segment_files(path: str) -> dict[int, str]:
    """Segment files in ``path``: id -> file name."""
    out = {}
    for n in os.listdir(path):
        if n.startswith("seg-") and n.endswith(".fseg") and len(n) == 25:
            try:
                out[int(n[4:-5], 16)] = n
            except ValueError:
                pass
    return out


def wal_runs(path: str) -> list:
    """Every WAL file of ``path`` decoded (salvage mode: damage skipped), one run each."""
    runs = []
    for _shard, files in sorted(list_files(path).items()):
        for i, (_no, fpath) in enumerate(files):
            try:
                runs.append(decode([read_file(fpath, last=i == len(files) - 1, damaged=[])]))
            except FileNotFoundError:
                pass
    return runs


def orphan_problems(path: str, segs: dict[int, str], wal_runs: list) -> list[str]:
    """For a database without a MANIFEST: the segment files ``segs`` that fail
    verification or hold an entry (key and seqno) that no WAL mutation in
    ``wal_runs`` holds. A merge before the first manifest writes only entries
    the WAL holds (the WAL is truncated only after a manifest), so such a file
    means the manifest was lost, and ``open`` would delete it as unreferenced."""
    logged = set()
    for run in wal_runs:
        seq = run.seq.tolist()
        logged.update((run.key(i), seq[i]) for i in range(len(run)))
    out = []
    for segid, name in sorted(segs.items()):
        try:
            seg = Segment(os.path.join(path, name), segid)
        except CorruptionError as e:
            out.append(f"{e} (and no MANIFEST names it)")
            continue
        try:
            seq = seg.seq.tolist()
            only = sum(1 for j in range(seg.count) if (seg.key(j), seq[j]) not in logged)
        finally:
            seg.close()
        if only:
            out.append(f"no MANIFEST in {path}, but {os.path.join(path, name)} holds {only} "
                       f"entries the WAL does not: the manifest was lost (open would delete "
                       f"the file as unreferenced); fusedb repair rebuilds it")
    return out


def range_problems(man: manifest.ManifestData, i: int, seg: Segment) -> list[str]:
    """Whether the keys of ``seg`` (named by leaf ``i``) lie inside the leaf's
    range [lo, next leaf's lo): its first and last key are compared."""
    if not seg.count:
        return []
    lo = man.leaves[i].lo
    hi = man.leaves[i + 1].lo if i + 1 < len(man.leaves) else None
    first, last = seg.key(0), seg.key(seg.count - 1)
    out = []
    if first < lo:
        out.append(f"{leaf_name(man, i)}: {seg.path} holds key {show(first)}, below the "
                   f"leaf's lower bound {show(lo)}")
    if hi is not None and last >= hi:
        out.append(f"{leaf_name(man, i)}: {seg.path} holds key {show(last)}, at or above the "
                   f"next leaf's lower bound {show(hi)}")
    return out


def segment_problems(man: manifest.ManifestData, segments: dict) -> list[str]:
    """Problems of the segments ``man`` names, opened in ``segments`` (id ->
    Segment, or the CorruptionError opening it raised): whole-file checksum,
    keys strictly sorted, keys inside the leaf's range."""
    out = []
    for i, lf in enumerate(man.leaves):
        for segid in lf.segs:
            seg = segments[segid]
            if isinstance(seg, CorruptionError):
                out.append(str(seg))
                continue
            try:
                seg.verify()
            except CorruptionError as e:
                out.append(str(e))
                continue
            keys = [seg.key(j) for j in range(seg.count)]
            if any(a >= b for a, b in zip(keys, keys[1:])):
                out.append(f"{seg.path}: keys not strictly sorted")
            out += range_problems(man, i, seg)
    return out
