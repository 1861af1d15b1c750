"""WAL record and file format (docs/format.md, "WAL"; the numbers and struct
formats: fusedb.core.layout). All integers little-endian.

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

import errno
import os
import struct

from fusedb.core.layout import (T_MUTATIONS, T_PAD, WAL_BODY_HEADER, WAL_FILE_HEADER,  # noqa: F401
                                WAL_MAGIC, WAL_MUTATION, WAL_RECORD_HEADER, WAL_VERSION, pad8,
                                pad16)

MAGIC = WAL_MAGIC
VERSION = WAL_VERSION
FILE_HEADER = struct.Struct(WAL_FILE_HEADER)
RECORD_HEADER = struct.Struct(WAL_RECORD_HEADER)
BODY_HEADER = struct.Struct(WAL_BODY_HEADER)
MUTATION = struct.Struct(WAL_MUTATION)


def write_file_header(fd: int, shard: int, file_no: int, start_pos: int, write=None) -> int:
    """Write a WAL file header (FILE_HEADER.size bytes) at ``fd``'s offset;
    returns the bytes written. Raises OSError (EIO for a short write).
    ``write``: the caller's ``os.write`` (see fusedb.core.fileio.write_all)."""
    header = FILE_HEADER.pack(MAGIC, VERSION, shard, file_no, start_pos)
    if (write or os.write)(fd, header) != len(header):
        raise OSError(errno.EIO, "short write of a WAL file header")
    return len(header)


def file_name(shard: int, file_no: int) -> str:
    return f"wal-{shard:03d}-{file_no:010d}.log"


def parse_file_name(name: str) -> tuple[int, int] | None:
    if not (name.startswith("wal-") and name.endswith(".log")):
        return None
    parts = name[4:-4].split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])
