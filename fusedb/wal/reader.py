"""Reading WAL files: record framing, torn tails, damage, and vectorised decoding
of mutations into a :class:`fusedb.core.run.Run`.

Damage rules (docs/format.md, "WAL"): in the *last* file of a shard, a bad record
after which no valid record starts (at any 16-byte boundary up to EOF) is a torn
tail: it was never acknowledged as durable, and it is cut off silently. Any other bad record,
a bad file header, or an unknown version raises CorruptionError naming the file
and the offset.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
import xxhash

from fusedb.errors import CorruptionError
from fusedb.core.run import Run
from fusedb.wal.format import (BODY_HEADER, FILE_HEADER, MAGIC, MUTATION, RECORD_HEADER,
                               T_MUTATIONS, T_PAD, VERSION, parse_file_name, pad16)

_hash = xxhash.xxh3_64_intdigest


@dataclass
class WalFile:
    """One WAL file read whole into memory and framed (:func:`read_file`): its
    header fields, bytes and record offsets. A value owned by the thread that
    read it, no lock: recovery at open (LOCK held, before shared memory), a
    worker process's shard rebuild (main thread, under its shard lock), and
    ``fusedb check``/``dump``/``repair``."""

    path: str
    shard: int
    file_no: int
    start_pos: int     # stream position of the first record
    data: bytes        # the whole file
    end: int           # file offset after the last good record
    torn: bool         # a torn tail follows ``end``
    record_offsets: list[int]        # file offset of each MUTATIONS record
    muts: list[int]                  # file offset of each mutation header, in log order

    @property
    def records(self) -> list[tuple[int, int]]:
        """(file offset, body length) of each MUTATIONS record."""
        return [(o, RECORD_HEADER.unpack_from(self.data, o)[1]) for o in self.record_offsets]

    @property
    def end_pos(self) -> int:
        return self.start_pos + self.end - FILE_HEADER.size


def list_files(dirpath: str) -> dict[int, list[tuple[int, str]]]:
    """WAL files of ``dirpath`` by shard: sorted lists of (file_no, path)."""
    out: dict[int, list[tuple[int, str]]] = {}
    for name in os.listdir(dirpath):
        parsed = parse_file_name(name)
        if parsed is not None:
            out.setdefault(parsed[0], []).append((parsed[1], os.path.join(dirpath, name)))
    for files in out.values():
        files.sort()
    return out


def read_file(path: str, last: bool, damaged: list[tuple[int, int]] | None = None) -> WalFile:
    """Frame every record of one WAL file (``last``: it may have a torn tail).

    Raises CorruptionError (naming the file and offset) on any damage but a torn
    tail, unless ``damaged`` is given (salvage, for ``fusedb repair``): then each
    damaged stretch is appended to it as (start, end) file offsets and reading
    goes on where the next valid record starts, so every record that verifies is
    kept. A damaged stretch is a bad file header (0, 64), or a bad record up to
    the next 16-byte boundary at which a whole record with a good checksum
    starts (or up to the end of the file). A torn tail of the last file is still
    reported as ``torn``, not in ``damaged``."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < FILE_HEADER.size and last and MAGIC.startswith(data[:8]):
        # A crash right after the file was created, before its header was
        # complete: nothing in it was ever acknowledged.
        return WalFile(path, -1, -1, 0, data, len(data), True, [], [])
    shard = file_no = start_pos = -1
    if len(data) < FILE_HEADER.size:
        problem = f"WAL file header truncated at offset {len(data)}: {path}"
        if damaged is None:
            raise CorruptionError(problem, path, len(data))
        damaged.append((0, len(data)))
        return WalFile(path, -1, -1, 0, data, len(data), False, [], [])
    magic, version, shard, file_no, start_pos = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        if damaged is None:
            if magic != MAGIC:
                raise CorruptionError(f"not a WAL file (bad magic) at offset 0: {path}", path, 0)
            raise CorruptionError(f"unknown WAL format version {version} at offset 8: {path}",
                                  path, 8)
        # Salvage: the records after a damaged header still verify on their own.
        damaged.append((0, FILE_HEADER.size))
        shard = file_no = start_pos = -1
    records = []
    muts = []          # file offset of every mutation header, in log order
    off = FILE_HEADER.size
    size = len(data)
    torn = False
    mv = memoryview(data)
    unpack32 = _HEAD32.unpack_from
    add_record, add_mut, h = records.append, muts.append, _hash
    limit = size - 32
    while off < size:
        # Fast path: whole, valid MUTATIONS records holding one mutation each.
        while off <= limit:
            checksum, length, rtype, _lsn, count, _r = unpack32(data, off)
            end = off + 16 + length
            if rtype != T_MUTATIONS or end > size or length < 40 or \
                    h(mv[off + 8:end]) != checksum:
                break
            if count == 1:
                add_mut(off + 32)
            elif not _mutations(data, off, length, count, muts):
                break          # malformed body under a good checksum: the slow path says so
            add_record(off)
            off = (end + 15) & ~15
        if off >= size:
            break
        problem = None
        if size - off < RECORD_HEADER.size:
            problem = "truncated record header"
            extent = off + RECORD_HEADER.size
        else:
            checksum, length, rtype = RECORD_HEADER.unpack_from(data, off)
            extent = off + pad16(RECORD_HEADER.size + length)
            if rtype not in (T_MUTATIONS, T_PAD):
                problem = f"bad record type {rtype}"
            elif off + RECORD_HEADER.size + length > size:
                problem = f"record length {length} runs past the end of the file"
            elif rtype == T_PAD:
                if _hash(mv[off + 8:off + 16]) != checksum:
                    problem = "checksum mismatch"
            elif _hash(mv[off + 8:off + RECORD_HEADER.size + length]) != checksum:
                problem = "checksum mismatch"
            elif length < BODY_HEADER.size:
                problem = f"bad record length {length}"
            elif not _mutations(data, off, length, unpack32(data, off)[4], muts):
                # Whole and checksummed, so never a torn write: always damage.
                if damaged is None:
                    raise CorruptionError(f"WAL record body malformed at offset {off}: {path}",
                                          path, off)
                damaged.append((off, min(extent, size)))
            else:   # valid, just not the fast path's shape (e.g. zero mutations)
                records.append(off)
        if problem is not None:
            # Torn only if nothing valid follows: a damaged length field must not
            # hide the good records after it.
            resume = _next_valid(mv, off + RECORD_HEADER.size, size)
            if last and resume is None:
                torn = True
                break
            if damaged is None:
                raise CorruptionError(f"WAL record damaged ({problem}) at offset {off}: {path}",
                                      path, off)
            damaged.append((off, size if resume is None else resume))
            if resume is None:
                off = size
                break
            extent = resume
        off = min(extent, size)
    mv.release()
    return WalFile(path, shard, file_no, start_pos, data, off, torn, records, muts)


_HEAD32 = struct.Struct("<QIIQII")


def _mutations(data: bytes, off: int, length: int, count: int, muts: list[int]) -> bool:
    """Append the offsets of the ``count`` mutations of the record at ``off``;
    False (appending nothing) if they do not fit its body."""
    p = off + 32
    end = off + 16 + length
    found = []
    for _ in range(count):
        if p + MUTATION.size > end:
            return False
        found.append(p)
        klen, vlen = MUTATION.unpack_from(data, p)[4:6]
        p += MUTATION.size + ((klen + vlen + 7) & ~7)
    if p > end:
        return False
    muts.extend(found)
    return True


def _next_valid(mv: memoryview, start: int, size: int) -> int | None:
    """The first 16-byte-aligned offset from ``start`` (aligned) at which a whole
    record with a good checksum starts; None if there is none."""
    for o in range(start, size - 15, 16):
        if _valid_at(mv, o, size):
            return o
    return None


def _valid_at(mv: memoryview, off: int, size: int) -> bool:
    """Whether a whole record with a good checksum starts at ``off``."""
    checksum, length, rtype = RECORD_HEADER.unpack_from(mv, off)
    if rtype == T_PAD:
        return _hash(mv[off + 8:off + 16]) == checksum and off + 16 + length <= size
    if rtype != T_MUTATIONS or off + 16 + length > size or length < BODY_HEADER.size:
        return False
    return _hash(mv[off + 8:off + 16 + length]) == checksum


def decode(files: list[WalFile]) -> Run:
    """Every mutation of ``files`` (in log order) as one run; vectorised gathers.

    The heap is the files' bytes concatenated (no copy for a single file); keys
    start 24 bytes after each mutation header and values right after the key."""
    heaps = [np.frombuffer(wf.data, np.uint8) for wf in files]
    bases = np.cumsum([0] + [len(h) for h in heaps[:-1]])
    offs = np.concatenate([np.array(wf.muts, np.int64) + b for wf, b in zip(files, bases)]) \
        if files else np.zeros(0, np.int64)
    heap = np.concatenate(heaps) if len(heaps) > 1 else (heaps[0] if heaps else
                                                           np.zeros(0, np.uint8))
    # Mutation headers start at multiples of 8 (records are 16-aligned after a
    # 64-byte file header), so each field is one gather through a typed view.
    pad = (-len(heap)) % 8
    base = np.concatenate([heap, np.zeros(pad, np.uint8)]) if pad else heap
    q = offs // 8
    seq = base.view("<u8")[q]
    exp = base.view("<f8")[q + 1]
    kind = base[offs + 16]
    klen = base.view("<u2")[(offs + 18) // 2].astype(np.int64)
    vlen = base.view("<u4")[(offs + 20) // 4].astype(np.int64)
    kstart = offs + MUTATION.size
    # Key hashes are left 0 here: most log records are overwrites, so they are
    # computed after deduplication, for the survivors only (see fill_hashes).
    return Run(np.zeros(len(offs), np.uint64), seq, exp, kind, kstart, klen, heap,
               kstart + klen, vlen, heap)


def fill_hashes(run: Run) -> Run:
    """Compute the key hash of every entry whose hash is 0 (entries from the log)."""
    todo = np.flatnonzero(run.hash == 0)
    if len(todo):
        h = run.hash.copy()
        h[todo] = [_hash(run.key(int(i))) for i in todo]
        run.hash = h
    return run
