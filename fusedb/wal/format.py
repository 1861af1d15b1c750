"""WAL record and file format (docs/format.md, "WAL"). All integers little-endian.

    file     := file_header record*
    file_header (64 bytes) := magic "FUSEWAL1" version:u32 shard:u32 file_no:u64
                              start_pos:u64 reserved[32]
    record   := checksum:u64 length:u32 type:u32 body[length] zero-pad to 16
    checksum := xxh3_64 of the 8 bytes (length, type) followed by body
    type     := MUTATIONS (1) | PAD (2)
    body(MUTATIONS) := lsn:u64 count:u32 reserved:u32 mutation{count}
    mutation := seq:u64 exp:f64 kind:u8 pad:u8 klen:u16 vlen:u32 key value zero-pad to 8
    body(PAD)  := unspecified bytes (fills the ring up to its end; readers skip it;
                  its checksum covers only length and type)
    Padding bytes (after a mutation, after a record's body) are unspecified.

A record's total size is a multiple of 16, so the ring (whose capacity is a
multiple of 16) never has a gap too small for a PAD record. A WAL file is the
ring's byte stream from position ``start_pos`` on; position p of the stream is at
file offset 64 + (p - start_pos).

One record is one atomic unit: a single operation, or one shard's part of a batch.
Counters are logged by their resulting value (kind INT), never as a delta, so
replaying a record twice is harmless.
"""

from __future__ import annotations

import struct

MAGIC = b"FUSEWAL1"
VERSION = 1
FILE_HEADER = struct.Struct("<8sIIQQ32x")
RECORD_HEADER = struct.Struct("<QII")
BODY_HEADER = struct.Struct("<QII")
MUTATION = struct.Struct("<QdBBHI")
T_MUTATIONS, T_PAD = 1, 2
assert FILE_HEADER.size == 64 and RECORD_HEADER.size == 16
assert BODY_HEADER.size == 16 and MUTATION.size == 24


def pad8(n: int) -> int:
    return (n + 7) & ~7


def pad16(n: int) -> int:
    return (n + 15) & ~15


def file_name(shard: int, file_no: int) -> str:
    return f"wal-{shard:03d}-{file_no:010d}.log"


def parse_file_name(name: str) -> tuple[int, int] | None:
    if not (name.startswith("wal-") and name.endswith(".log")):
        return None
    parts = name[4:-4].split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])
