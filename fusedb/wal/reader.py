"""Reading WAL files: record framing, torn tails, damage, and vectorised decoding
of mutations into a :class:`fusedb.run.Run`.

Damage rules (docs/format.md, "WAL"): in the *last* file of a shard, a bad record
after which no valid record starts (at any 16-byte boundary up to EOF) is a torn
tail: it was never acknowledged as durable, and it is cut off silently. Any other bad record,
a bad file header, or an unknown version raises CorruptionError naming the file
and the offset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import xxhash

from ..errors import CorruptionError
from ..run import Run
from .format import (BODY_HEADER, FILE_HEADER, MAGIC, MUTATION, RECORD_HEADER, T_MUTATIONS,
                     T_PAD, VERSION, parse_file_name, pad16)

_hash = xxhash.xxh3_64_intdigest


@dataclass
class WalFile:
    path: str
    shard: int
    file_no: int
    start_pos: int     # stream position of the first record
    data: bytes        # the whole file
    end: int           # file offset after the last good record
    torn: bool         # a torn tail follows ``end``
    records: list[tuple[int, int]]   # (file offset, body length) of each MUTATIONS record

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


def read_file(path: str, last: bool) -> WalFile:
    """Frame every record of one WAL file (``last``: it may have a torn tail)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < FILE_HEADER.size:
        raise CorruptionError(f"WAL file header truncated at offset {len(data)}: {path}",
                              path, len(data))
    magic, version, shard, file_no, start_pos = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise CorruptionError(f"not a WAL file (bad magic) at offset 0: {path}", path, 0)
    if version != VERSION:
        raise CorruptionError(f"unknown WAL format version {version} at offset 8: {path}",
                              path, 8)
    records = []
    off = FILE_HEADER.size
    size = len(data)
    torn = False
    mv = memoryview(data)
    while off < size:
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
            else:
                covered = mv[off + 8:off + 16] if rtype == T_PAD else \
                    mv[off + 8:off + RECORD_HEADER.size + length]
                if _hash(covered) != checksum:
                    problem = "checksum mismatch"
                elif rtype == T_MUTATIONS and length < BODY_HEADER.size:
                    problem = f"bad record length {length}"
        if problem is not None:
            # Torn only if nothing valid follows: a damaged length field must not
            # hide the good records after it.
            at_tail = not any(_valid_at(mv, o, size)
                              for o in range(off + RECORD_HEADER.size, size - 15, 16))
            if last and at_tail:
                torn = True
                break
            raise CorruptionError(f"WAL record damaged ({problem}) at offset {off}: {path}",
                                  path, off)
        if rtype == T_MUTATIONS:
            records.append((off, length))
        off = min(extent, size)
    mv.release()
    return WalFile(path, shard, file_no, start_pos, data, off, torn, records)


def _valid_at(mv: memoryview, off: int, size: int) -> bool:
    """Whether a whole record with a good checksum starts at ``off``."""
    checksum, length, rtype = RECORD_HEADER.unpack_from(mv, off)
    if rtype == T_PAD:
        return _hash(mv[off + 8:off + 16]) == checksum and off + 16 + length <= size
    if rtype != T_MUTATIONS or off + 16 + length > size or length < BODY_HEADER.size:
        return False
    return _hash(mv[off + 8:off + 16 + length]) == checksum


def decode(files: list[WalFile]) -> Run:
    """Every mutation of ``files`` (in log order) as one run; vectorised gathers."""
    offsets = []       # global byte offset of each mutation header
    blobs = []
    base = 0
    unpack_body = BODY_HEADER.unpack_from
    unpack_mut = MUTATION.unpack_from
    for wf in files:
        data = wf.data
        for off, length in wf.records:
            count = unpack_body(data, off + 16)[1]
            if count == 1 and length >= 16 + MUTATION.size:
                offsets.append(base + off + 32)
                continue
            p = off + 32
            end = off + 16 + length
            for _ in range(count):
                if p + MUTATION.size > end:
                    raise CorruptionError(f"WAL record body malformed at offset {off}: "
                                          f"{wf.path}", wf.path, off)
                offsets.append(base + p)
                klen, vlen = unpack_mut(data, p)[4:6]
                p += MUTATION.size + ((klen + vlen + 7) & ~7)
        blobs.append(np.frombuffer(wf.data, np.uint8))
        base += len(wf.data)
    heap = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)
    offs = np.array(offsets, np.int64)
    hdr = heap[offs[:, None] + np.arange(MUTATION.size)] if len(offs) else \
        np.zeros((0, MUTATION.size), np.uint8)
    fields = np.ascontiguousarray(hdr).view(np.dtype([("seq", "<u8"), ("exp", "<f8"),
                                                      ("kind", "u1"), ("pad", "u1"),
                                                      ("klen", "<u2"), ("vlen", "<u4")]))
    fields = fields.reshape(len(offs))
    klen = fields["klen"].astype(np.int64)
    vlen = fields["vlen"].astype(np.int64)
    kstart = offs + MUTATION.size
    # Key hashes are left 0 here: most log records are overwrites, so they are
    # computed after deduplication, for the survivors only (see fill_hashes).
    return Run(np.zeros(len(offs), np.uint64), fields["seq"].astype(np.uint64), fields["exp"].astype(np.float64),
               fields["kind"].astype(np.uint8), kstart, klen, heap, kstart + klen, vlen, heap)


def fill_hashes(run: Run) -> Run:
    """Compute the key hash of every entry whose hash is 0 (entries from the log)."""
    todo = np.flatnonzero(run.hash == 0)
    if len(todo):
        h = run.hash.copy()
        h[todo] = [_hash(run.key(int(i))) for i in todo]
        run.hash = h
    return run
