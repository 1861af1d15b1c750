"""Offline verification and dumping of a database directory, built on the same
readers the engine uses. Behind ``fusedb check PATH`` and ``fusedb dump PATH``.

Neither opens the database (no shared memory, no lock taken): run them on a
closed database, or on a copy.
"""

from __future__ import annotations

import os
from typing import Iterator

from . import manifest
from .entry import KIND_DEL, KIND_INT
from .errors import CorruptionError
from .segment import Segment, file_name
from .wal.reader import decode, list_files, read_file


def check(path: str) -> list[str]:
    """Every problem found in the database at ``path`` (empty list: healthy)."""
    problems = []
    try:
        man = manifest.read(path)
    except CorruptionError as e:
        return [str(e)]
    if man is None:
        # A database that crashed before its first manifest (written after the
        # first round of merges, or at close) is its WAL alone: healthy.
        if not list_files(path):
            problems.append(f"no MANIFEST and no WAL in {path} (not a FuseDB database)")
        man = manifest.ManifestData()
    prev = None
    for lf in man.leaves:
        if prev is not None and lf.lo <= prev:
            problems.append(f"MANIFEST leaves out of order at lower bound {lf.lo!r}")
        prev = lf.lo
    for i, lf in enumerate(man.leaves):
        hi = man.leaves[i + 1].lo if i + 1 < len(man.leaves) else None
        for segid in lf.segs:
            try:
                seg = Segment(os.path.join(path, file_name(segid)), segid)
            except CorruptionError as e:
                problems.append(str(e))
                continue
            try:
                keys = [seg.key(j) for j in range(seg.count)]
                if any(a >= b for a, b in zip(keys, keys[1:])):
                    problems.append(f"{seg.path}: keys not strictly sorted")
                if keys and (keys[0] < lf.lo or (hi is not None and keys[-1] >= hi)):
                    problems.append(f"{seg.path}: keys outside the leaf's range")
            finally:
                seg.close()
    for _shard, files in sorted(list_files(path).items()):
        for i, (_no, fpath) in enumerate(files):
            try:
                wf = read_file(fpath, last=i == len(files) - 1)
                decode([wf])
                if wf.torn:
                    problems.append(f"{fpath}: torn tail at offset {wf.end} (repaired at the "
                                    f"next open; it was never acknowledged as durable)")
            except CorruptionError as e:
                problems.append(str(e))
    return problems


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
                yield f"  {run.key(j)!r} seq={int(run.seq[j])} {_fmt(int(run.kind[j]), run.value(j))}"
