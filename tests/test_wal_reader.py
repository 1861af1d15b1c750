"""WAL reader tests, table-driven in the style of LevelDB's log_test.

WAL files are built byte by byte from the structs in ``fusedb.wal.format`` (never
through the writer), then damaged with small byte-level helpers, and read back
with ``read_file`` / ``decode``. A last group feeds the reader bytes produced by
the real shared-memory ``Ring``.
"""

from __future__ import annotations

import os
import random
import struct
from dataclasses import dataclass

import numpy as np
import posix_ipc
import pytest
import xxhash

from fusedb.core.entry import KIND_DEL, KIND_INT, KIND_VALUE
from fusedb.errors import CorruptionError
from fusedb.wal.format import (BODY_HEADER, FILE_HEADER, MAGIC, MUTATION, RECORD_HEADER,
                               T_MUTATIONS, T_PAD, VERSION, file_name, pad8, pad16)
from fusedb.wal.reader import decode, fill_hashes, list_files, read_file
from fusedb.wal.ring import R_ROOM, Ring

H = FILE_HEADER.size  # 64: offset of the first record in every file

# ---------------------------------------------------------------------------------
# Encoding helpers
# ---------------------------------------------------------------------------------


def put(seq: int, key: bytes, value: bytes, exp: float = 0.0) -> tuple:
    return (seq, exp, KIND_VALUE, key, value)


def incr(seq: int, key: bytes, n: int, exp: float = 0.0) -> tuple:
    """A counter mutation: the value is 8 bytes, little-endian signed."""
    return (seq, exp, KIND_INT, key, n.to_bytes(8, "little", signed=True))


def delete(seq: int, key: bytes) -> tuple:
    return (seq, 0.0, KIND_DEL, key, b"")


def encode_mutation(seq: int, exp: float, kind: int, key: bytes, value: bytes) -> bytes:
    n = len(key) + len(value)
    return (MUTATION.pack(seq, exp, kind, 0, len(key), len(value)) + key + value
            + bytes(pad8(n) - n))


def raw_record(rtype: int, body: bytes, length: int | None = None,
               checksum: int | None = None) -> bytes:
    """checksum:u64 length:u32 type:u32 body zero-pad to 16. The checksum covers
    (length, type) and the body; for PAD only (length, type)."""
    if length is None:
        length = len(body)
    lt = struct.pack("<II", length, rtype)
    if checksum is None:
        checksum = xxhash.xxh3_64_intdigest(lt if rtype == T_PAD else lt + body)
    rec = struct.pack("<Q", checksum) + lt + body
    return rec + bytes(pad16(len(rec)) - len(rec))


def mutations_record(muts: list[tuple], lsn: int = 0) -> bytes:
    body = BODY_HEADER.pack(lsn, len(muts), 0) + b"".join(encode_mutation(*m) for m in muts)
    return raw_record(T_MUTATIONS, body)


def pad_record(total: int) -> bytes:
    """A PAD record of ``total`` bytes (a multiple of 16, at least 16)."""
    assert total % 16 == 0 and total >= 16
    return raw_record(T_PAD, bytes(total - 16))


def file_header(shard: int = 0, file_no: int = 1, start_pos: int = 0,
                magic: bytes = MAGIC, version: int = VERSION) -> bytes:
    return FILE_HEADER.pack(magic, version, shard, file_no, start_pos)


@dataclass
class Rec:
    off: int        # file offset of the record
    size: int       # total size, padding included
    rtype: int
    length: int     # body length (the header's length field)
    muts: list


def build(records: list, **hdr) -> tuple[bytes, list[Rec]]:
    """A file: header, then for each item a MUTATIONS record (a list of mutations,
    lsn = its index) or a PAD record (an int: its total size)."""
    data = bytearray(file_header(**hdr))
    recs = []
    for i, r in enumerate(records):
        if isinstance(r, int):
            b = pad_record(r)
            recs.append(Rec(len(data), len(b), T_PAD, r - 16, []))
        else:
            b = mutations_record(r, lsn=i)
            recs.append(Rec(len(data), len(b), T_MUTATIONS,
                            BODY_HEADER.size + sum(len(encode_mutation(*m)) for m in r), r))
        data += b
    return bytes(data), recs


# ---------------------------------------------------------------------------------
# Corruption helpers
# ---------------------------------------------------------------------------------


def flip(data: bytes, off: int, mask: int = 0x01) -> bytes:
    b = bytearray(data)
    b[off] ^= mask
    return bytes(b)


def truncate(data: bytes, off: int) -> bytes:
    return data[:off]


def append_zeros(data: bytes, n: int) -> bytes:
    return data + bytes(n)


def set_u32(data: bytes, off: int, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into("<I", b, off, value)
    return bytes(b)


def set_length(data: bytes, rec_off: int, length: int) -> bytes:
    return set_u32(data, rec_off + 8, length)


def set_type(data: bytes, rec_off: int, rtype: int) -> bytes:
    return set_u32(data, rec_off + 12, rtype)


def zero_range(data: bytes, start: int, end: int) -> bytes:
    return data[:start] + bytes(end - start) + data[end:]


# ---------------------------------------------------------------------------------
# Reading helpers
# ---------------------------------------------------------------------------------


def write(tmp_path, data: bytes, name: str = "wal-000-0000000001.log") -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def rows(run) -> list[tuple]:
    """(seq, exp, kind, key, value) of every entry, in order."""
    return [(int(run.seq[i]), float(run.exp[i]), int(run.kind[i]), run.key(i), run.value(i))
            for i in range(len(run))]


def expected_records(recs: list[Rec]) -> list[tuple[int, int]]:
    return [(r.off, r.length) for r in recs if r.rtype == T_MUTATIONS]


def expected_rows(recs: list[Rec]) -> list[tuple]:
    return [m for r in recs for m in r.muts]


def check_good(wf, data: bytes, recs: list[Rec]) -> None:
    assert wf.torn is False
    assert wf.end == len(data)
    assert wf.records == expected_records(recs)
    assert rows(decode([wf])) == expected_rows(recs)


# ---------------------------------------------------------------------------------
# File header
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("last", [True, False])
def test_header_only_file_has_no_records(tmp_path, last):
    data = file_header(shard=3, file_no=42, start_pos=4096)
    wf = read_file(write(tmp_path, data), last=last)
    assert (wf.shard, wf.file_no, wf.start_pos) == (3, 42, 4096)
    assert wf.records == [] and wf.torn is False and wf.end == H
    assert wf.end_pos == 4096
    assert len(decode([wf])) == 0
    assert len(decode([])) == 0


HEADER_CASES = [
    # name, file bytes, expected CorruptionError offset
    ("empty file", b"", 0),
    ("one byte", b"F", 1),
    ("magic only", MAGIC, 8),
    ("header minus one byte", file_header()[:63], 63),
    ("bad magic", file_header(magic=b"FUSEWAL2"), 0),
    ("bad magic, zero header", bytes(64), 0),
    ("bad magic, good records follow",
     file_header(magic=b"XUSEWAL1") + mutations_record([put(1, b"k", b"v")]), 0),
    ("unknown version 2", file_header(version=2), 8),
    ("unknown version 0", file_header(version=0), 8),
    ("unknown version, good records follow",
     file_header(version=VERSION + 1) + mutations_record([put(1, b"k", b"v")]), 8),
]


@pytest.mark.parametrize("last", [True, False])
@pytest.mark.parametrize("name,data,offset", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_bad_file_header(tmp_path, name, data, offset, last):
    path = write(tmp_path, data)
    if last and len(data) < H and MAGIC.startswith(data[:8]):
        # A shard's last file cut inside its header: a crash right after the file
        # was created. Nothing in it was ever acknowledged: a torn tail, not damage.
        wf = read_file(path, last=True)
        assert wf.torn and wf.records == [] and wf.muts == []
        return
    with pytest.raises(CorruptionError) as ei:
        read_file(path, last=last)
    assert ei.value.path == path
    assert ei.value.offset == offset


# ---------------------------------------------------------------------------------
# Good files
# ---------------------------------------------------------------------------------

BIG = bytes(range(256)) * 40  # 10240 bytes

GOOD_CASES = [
    ("one record", [[put(1, b"key", b"value")]]),
    ("many records", [[put(i, b"k%03d" % i, b"v" * i)] for i in range(1, 60)]),
    ("batch record", [[put(7, b"a", b"1"), put(8, b"bb", b"22"), delete(9, b"ccc"),
                       incr(10, b"dddd", 5)]]),
    ("int mutation", [[incr(1, b"counter", -2)]]),
    ("int extremes", [[incr(1, b"lo", -(1 << 63)), incr(2, b"hi", (1 << 63) - 1),
                       incr(3, b"zero", 0)]]),
    ("tombstone", [[delete(5, b"gone")]]),
    ("tombstone then put", [[delete(5, b"k")], [put(6, b"k", b"back")]]),
    ("empty value", [[put(1, b"k", b"")]]),
    ("lengths not multiples of 8",
     [[put(1, b"k" * n, b"v" * m)] for n, m in [(1, 0), (3, 4), (5, 2), (7, 9), (9, 15),
                                                (13, 17), (1, 23), (31, 1)]]),
    ("key+value exactly 8", [[put(1, b"abc", b"defgh")]]),
    ("binary bytes incl. zeros", [[put(1, b"\x00k\x00", b"\x00\x00\xff\x00")]]),
    ("expiry", [[put(1, b"ttl", b"v", exp=1_000_123.25)], [incr(2, b"c", 9, exp=5.5)]]),
    ("large value", [[put(1, b"big", BIG)], [put(2, b"after", b"x")]]),
    ("large seq", [[put((1 << 64) - 1, b"k", b"v")]]),
    ("pad between records", [[put(1, b"a", b"1")], 64, [put(2, b"b", b"2")]]),
    ("minimal pad", [[put(1, b"a", b"1")], 16, [put(2, b"b", b"2")]]),
    ("big pad", [[put(1, b"a", b"1")], 4096, [put(2, b"b", b"2")]]),
    ("pad first and last", [32, [put(1, b"a", b"1")], 48]),
    ("pads only", [16, 32]),
    ("mutations record with zero mutations", [[], [put(1, b"a", b"1")]]),
]


@pytest.mark.parametrize("last", [True, False])
@pytest.mark.parametrize("name,records", GOOD_CASES, ids=[c[0] for c in GOOD_CASES])
def test_good_file(tmp_path, name, records, last):
    data, recs = build(records, shard=2, file_no=9, start_pos=1600)
    wf = read_file(write(tmp_path, data), last=last)
    assert (wf.shard, wf.file_no, wf.start_pos) == (2, 9, 1600)
    check_good(wf, data, recs)
    assert wf.end_pos == 1600 + len(data) - H


def test_int_value_is_little_endian_signed(tmp_path):
    data, _ = build([[incr(1, b"c", -300)]])
    run = decode([read_file(write(tmp_path, data), last=True)])
    assert run.kind[0] == KIND_INT
    assert run.value(0) == b"\xd4\xfe\xff\xff\xff\xff\xff\xff"
    assert int.from_bytes(run.value(0), "little", signed=True) == -300


def test_tombstone_has_no_value(tmp_path):
    data, recs = build([[delete(4, b"dead"), put(5, b"live", b"v")]])
    run = decode([read_file(write(tmp_path, data), last=True)])
    assert list(run.kind) == [KIND_DEL, KIND_VALUE]
    assert list(run.vlen) == [0, 1]
    assert run.value(0) == b"" and run.key(0) == b"dead"


def test_padding_bytes_are_not_part_of_keys_or_values(tmp_path):
    # key+value = 3 bytes, so 5 padding bytes follow. Fill them with junk (they are
    # inside the body, so the checksum covers them) and check nothing leaks.
    body = (BODY_HEADER.pack(0, 1, 0) + MUTATION.pack(1, 0.0, KIND_VALUE, 0, 1, 2)
            + b"kvv" + b"\xee" * 5)
    data = file_header() + raw_record(T_MUTATIONS, body)
    run = decode([read_file(write(tmp_path, data), last=True)])
    assert rows(run) == [(1, 0.0, KIND_VALUE, b"k", b"vv")]


def test_decode_several_files_in_order(tmp_path):
    d1, r1 = build([[put(1, b"a", b"1")], [put(2, b"bb", b"22")]], file_no=1, start_pos=0)
    d2, r2 = build([[put(3, b"ccc", b"333"), delete(4, b"a")], 32, [incr(5, b"n", 7)]],
                   file_no=2, start_pos=len(d1) - H)
    w1 = read_file(write(tmp_path, d1, file_name(0, 1)), last=False)
    w2 = read_file(write(tmp_path, d2, file_name(0, 2)), last=True)
    assert w1.end_pos == w2.start_pos
    run = decode([w1, w2])
    assert rows(run) == expected_rows(r1) + expected_rows(r2)
    # Keys of the second file come from the second file's bytes (heap offsets).
    assert [run.key(i) for i in range(len(run))] == [b"a", b"bb", b"ccc", b"a", b"n"]


def test_decode_leaves_hashes_zero_and_fill_hashes_computes_them(tmp_path):
    data, recs = build([[put(1, b"alpha", b"1"), delete(2, b"beta")], [incr(3, b"gamma", 1)]])
    run = decode([read_file(write(tmp_path, data), last=True)])
    assert run.hash.dtype == np.uint64 and not run.hash.any()
    run = fill_hashes(run)
    assert [int(h) for h in run.hash] == [xxhash.xxh3_64_intdigest(k)
                                          for k in (b"alpha", b"beta", b"gamma")]


def test_decode_malformed_body_count_too_large(tmp_path):
    # A record whose checksum is valid but whose count promises more mutations
    # than the body holds: rejected at the record (read_file frames mutations).
    good = mutations_record([put(1, b"a", b"1")])
    body = BODY_HEADER.pack(0, 2, 0) + encode_mutation(*put(2, b"b", b"2"))
    data = file_header() + good + raw_record(T_MUTATIONS, body)
    path = write(tmp_path, data)
    with pytest.raises(CorruptionError) as ei:
        read_file(path, last=True)
    assert ei.value.path == path and ei.value.offset == H + len(good)


# ---------------------------------------------------------------------------------
# Damage at the end of a file: a torn tail in the last file, corruption otherwise
# ---------------------------------------------------------------------------------

THREE = [[put(1, b"first", b"one")], [put(2, b"second", b"two" * 5), delete(3, b"first")],
         [put(4, b"third", b"three" * 7)]]
WITH_PAD = [[put(1, b"a", b"1")], [put(2, b"b", b"2")], 64]

# name, records, damage(data, recs) -> (damaged data, offset of the first bad record)
TAIL_CASES = [
    ("truncated header, 1 byte left", THREE,
     lambda d, r: (truncate(d, r[2].off + 1), r[2].off)),
    ("truncated header, 8 bytes left", THREE,
     lambda d, r: (truncate(d, r[2].off + 8), r[2].off)),
    ("truncated header, 15 bytes left", THREE,
     lambda d, r: (truncate(d, r[2].off + 15), r[2].off)),
    ("truncated body, header complete", THREE,
     lambda d, r: (truncate(d, r[2].off + 16), r[2].off)),
    ("truncated body, mid-mutation", THREE,
     lambda d, r: (truncate(d, r[2].off + 40), r[2].off)),
    ("truncated body, one byte short", THREE,
     lambda d, r: (truncate(d, r[2].off + 16 + r[2].length - 1), r[2].off)),
    ("length field past EOF", THREE,
     lambda d, r: (set_length(d, r[2].off, r[2].length + 16), r[2].off)),
    ("length field huge", THREE,
     lambda d, r: (set_length(d, r[2].off, 0xFFFFFFFF), r[2].off)),
    ("bad checksum (checksum byte) on final record", THREE,
     lambda d, r: (flip(d, r[2].off), r[2].off)),
    ("bad checksum (body byte) on final record", THREE,
     lambda d, r: (flip(d, r[2].off + 16 + r[2].length - 1, 0x80), r[2].off)),
    ("bad checksum (key byte) on final record", THREE,
     lambda d, r: (flip(d, r[2].off + 32 + MUTATION.size), r[2].off)),
    ("bad type on final record", THREE,
     lambda d, r: (set_type(d, r[2].off, 9), r[2].off)),
    ("final record too short for a body header", [[put(1, b"a", b"1")], [put(2, b"b", b"2")]],
     lambda d, r: (d + raw_record(T_MUTATIONS, bytes(8)), len(d))),
    ("final record zeroed", THREE,
     lambda d, r: (zero_range(d, r[2].off, len(d)), r[2].off)),
    ("final record zeroed from its body on", THREE,
     lambda d, r: (zero_range(d, r[2].off + 16, len(d)), r[2].off)),
    ("4 KiB zero tail", THREE, lambda d, r: (append_zeros(d, 4096), len(d))),
    ("64 KiB zero tail", THREE, lambda d, r: (append_zeros(d, 65536), len(d))),
    ("16 zero bytes", THREE, lambda d, r: (append_zeros(d, 16), len(d))),
    ("5 zero bytes", THREE, lambda d, r: (append_zeros(d, 5), len(d))),
    ("bad checksum on final PAD", WITH_PAD,
     lambda d, r: (flip(d, r[2].off + 3), r[2].off)),
    ("final PAD truncated", WITH_PAD,
     lambda d, r: (truncate(d, r[2].off + 40), r[2].off)),
    ("first record torn", THREE,
     lambda d, r: (truncate(d, r[0].off + 20), r[0].off)),
    ("first record zeroed to EOF", THREE,
     lambda d, r: (zero_range(d, H, len(d)), H)),
]


@pytest.mark.parametrize("name,records,damage", TAIL_CASES, ids=[c[0] for c in TAIL_CASES])
def test_torn_tail_in_last_file(tmp_path, name, records, damage):
    data, recs = build(records)
    bad, off = damage(data, recs)
    wf = read_file(write(tmp_path, bad), last=True)
    kept = [r for r in recs if r.off < off]
    assert wf.torn is True
    assert wf.end == off
    assert wf.end_pos == off - H
    assert wf.records == expected_records(kept)
    assert rows(decode([wf])) == expected_rows(kept)


@pytest.mark.parametrize("name,records,damage", TAIL_CASES, ids=[c[0] for c in TAIL_CASES])
def test_same_tail_damage_in_earlier_file_is_corruption(tmp_path, name, records, damage):
    data, recs = build(records)
    bad, off = damage(data, recs)
    path = write(tmp_path, bad)
    with pytest.raises(CorruptionError) as ei:
        read_file(path, last=False)
    assert ei.value.path == path
    assert ei.value.offset == off


# ---------------------------------------------------------------------------------
# Damage followed by a good record: always corruption, even in the last file
# ---------------------------------------------------------------------------------

MIDDLE_CASES = [
    ("bad checksum (checksum byte)", THREE, lambda d, r: (flip(d, r[1].off + 7), r[1].off)),
    ("bad checksum (length/type bytes covered)", THREE,
     lambda d, r: (raw_patch_checksum(d, r[1]), r[1].off)),
    ("bad checksum (value byte)", THREE,
     lambda d, r: (flip(d, r[1].off + 32 + MUTATION.size + 6, 0x40), r[1].off)),
    ("bad checksum (seq byte)", THREE, lambda d, r: (flip(d, r[1].off + 32), r[1].off)),
    ("bad checksum in first record", THREE, lambda d, r: (flip(d, r[0].off + 20), r[0].off)),
    ("bad type 0", THREE, lambda d, r: (set_type(d, r[1].off, 0), r[1].off)),
    ("bad type 3", THREE, lambda d, r: (set_type(d, r[1].off, 3), r[1].off)),
    ("bad type high bit", THREE, lambda d, r: (flip(d, r[1].off + 15, 0x80), r[1].off)),
    ("oversized length, still inside the file", THREE,
     lambda d, r: (set_length(d, r[1].off, r[1].length + 16), r[1].off)),
    ("undersized length", THREE,
     lambda d, r: (set_length(d, r[1].off, r[1].length - 8), r[1].off)),
    ("oversized length, past EOF", THREE,
     lambda d, r: (set_length(d, r[1].off, r[1].length + 1_000_000), r[1].off)),
    ("oversized length 0xFFFFFFFF", THREE,
     lambda d, r: (set_length(d, r[1].off, 0xFFFFFFFF), r[1].off)),
    ("record header zeroed", THREE,
     lambda d, r: (zero_range(d, r[1].off, r[1].off + 16), r[1].off)),
    ("whole record zeroed", THREE,
     lambda d, r: (zero_range(d, r[1].off, r[1].off + r[1].size), r[1].off)),
    ("mutations record too short for a body header",
     [[put(1, b"a", b"1")], [put(2, b"b", b"2")]],
     lambda d, r: (d[:r[1].off] + raw_record(T_MUTATIONS, bytes(8)) + d[r[1].off:], r[1].off)),
    ("bad checksum on PAD", [[put(1, b"a", b"1")], 64, [put(2, b"b", b"2")]],
     lambda d, r: (flip(d, r[1].off + 1), r[1].off)),
    ("4 KiB of zeros, then a good record", [[put(1, b"a", b"1")], [put(2, b"b", b"2")]],
     lambda d, r: (d[:r[1].off] + bytes(4096) + d[r[1].off:], r[1].off)),
    ("garbage, then a good record", [[put(1, b"a", b"1")], [put(2, b"b", b"2")]],
     lambda d, r: (d[:r[1].off] + b"\xab" * 48 + d[r[1].off:], r[1].off)),
]


def raw_patch_checksum(data: bytes, rec: Rec) -> bytes:
    """Change the stored checksum to the hash of the body alone (without the
    (length, type) prefix), i.e. a checksum over the wrong range."""
    b = bytearray(data)
    body = bytes(b[rec.off + 16:rec.off + 16 + rec.length])
    struct.pack_into("<Q", b, rec.off, xxhash.xxh3_64_intdigest(body))
    return bytes(b)


@pytest.mark.parametrize("last", [True, False])
@pytest.mark.parametrize("name,records,damage", MIDDLE_CASES, ids=[c[0] for c in MIDDLE_CASES])
def test_damage_before_a_good_record_is_corruption(tmp_path, name, records, damage, last):
    data, recs = build(records)
    bad, off = damage(data, recs)
    path = write(tmp_path, bad)
    with pytest.raises(CorruptionError) as ei:
        read_file(path, last=last)
    assert ei.value.path == path
    assert ei.value.offset == off


def test_error_message_names_file_and_offset(tmp_path):
    data, recs = build(THREE)
    path = write(tmp_path, flip(data, recs[1].off))
    with pytest.raises(CorruptionError) as ei:
        read_file(path, last=True)
    assert path in str(ei.value) and f"offset {recs[1].off}" in str(ei.value)


# ---------------------------------------------------------------------------------
# Records produced by the real Ring
# ---------------------------------------------------------------------------------

RING_NAME = f"/fusedb-test-walreader-{os.getpid()}"
RING_CAP = 4096


def _unlink_ring() -> None:
    try:
        posix_ipc.unlink_shared_memory(RING_NAME)
    except posix_ipc.ExistentialError:
        pass


def ring_ops(seed: int, n: int) -> list[list[tuple]]:
    """``n`` ring appends: each a list of (seq, exp, kind, key, value, ivalue);
    one element = Ring.append, several = Ring.append_many."""
    rng = random.Random(seed)
    ops = []
    seq = 0

    def one():
        nonlocal seq
        seq += 1
        key = bytes(rng.randrange(256) for _ in range(rng.randint(1, 21)))
        exp = rng.choice([0.0, 0.0, 1_000_000.5 + seq])
        r = rng.random()
        if r < 0.15:
            return (seq, exp, KIND_INT, key, None, rng.randint(-(1 << 63), (1 << 63) - 1))
        if r < 0.3:
            return (seq, 0.0, KIND_DEL, key, None, 0)
        return (seq, exp, KIND_VALUE, key, bytes(rng.randrange(256) for _ in range(
            rng.randint(0, 90))), 0)

    for _ in range(n):
        ops.append([one() for _ in range(rng.choice([1, 1, 1, 2, 3, 5]))])
    return ops


def as_row(m: tuple) -> tuple:
    seq, exp, kind, key, value, ivalue = m
    if kind == KIND_INT:
        value = ivalue.to_bytes(8, "little", signed=True)
    return (seq, exp, kind, key, value or b"")


def frame(stream: bytes) -> list[tuple[int, int, int]]:
    """(stream offset, total size, type) of every record of a clean stream."""
    out, p = [], 0
    while p < len(stream):
        _c, length, rtype = RECORD_HEADER.unpack_from(stream, p)
        size = pad16(16 + length)
        out.append((p, size, rtype))
        p += size
    assert p == len(stream)
    return out


class RingDriver:
    """Appends to a ring and plays the WAL writer: whenever an append finds no room,
    the bytes [written, head) are moved out and ``written`` (and the room base
    writers measure ring space from) advances."""

    def __init__(self, ring: Ring):
        self.ring = ring
        self.stream = bytearray()   # every written-out byte, from stream position 0
        self.boundaries = [0]        # stream positions where a write-out ended
        self.two_views = 0          # write-outs that had to read across the wrap

    def write_out(self) -> None:
        ring = self.ring
        head, written = ring.hdr[3], ring.hdr[4]
        views = ring.chunks(written, head)
        if len(views) == 2:
            self.two_views += 1
        for v in views:
            self.stream += bytes(v)
            v.release()
        ring.hdr[4] = head
        ring.hdr[R_ROOM] = head     # as the WAL writer does under its WAL limit
        if head != self.boundaries[-1]:
            self.boundaries.append(head)
        assert len(self.stream) == head

    def append(self, op: list[tuple]) -> int:
        for _ in range(2):
            if len(op) == 1:
                pos = self.ring.append(*op[0])
            else:
                pos = self.ring.append_many(op)
            if pos != -1:
                return pos
            self.write_out()
        raise AssertionError("ring has no room even after a write-out")


def run_ring(ops: list[list[tuple]]) -> RingDriver:
    _unlink_ring()
    ring = Ring(RING_NAME, RING_CAP, create=True)
    try:
        drv = RingDriver(ring)
        for op in ops:
            before = ring.hdr[3]
            pos = drv.append(op)
            assert pos == ring.hdr[3] and pos > before
        drv.write_out()
        drv.ring = None
        return drv
    finally:
        ring.close()
        posix_ipc.unlink_shared_memory(RING_NAME)


def test_ring_records_round_trip_through_reader(tmp_path):
    ops = ring_ops(seed=1, n=400)
    drv = run_ring(ops)
    stream = bytes(drv.stream)
    assert len(stream) > 4 * RING_CAP, "the ring must wrap several times"
    types = [t for _o, _s, t in frame(stream)]
    assert types.count(T_PAD) >= 1, "wrapping must have written a PAD record"
    assert types.count(T_MUTATIONS) == len(ops)
    assert drv.two_views >= 1

    data = file_header(shard=1, file_no=7, start_pos=0) + stream
    wf = read_file(write(tmp_path, data, file_name(1, 7)), last=True)
    assert wf.torn is False and wf.end == len(data) and wf.end_pos == len(stream)
    assert len(wf.records) == len(ops)
    assert rows(decode([wf])) == [as_row(m) for op in ops for m in op]


def test_ring_first_records_match_hand_encoding():
    ops = [[(1, 0.0, KIND_VALUE, b"key", b"value", 0)],
           [(2, 12.5, KIND_INT, b"n", None, -7)],
           [(3, 0.0, KIND_DEL, b"key", None, 0)],
           [(4, 0.0, KIND_VALUE, b"a", b"1", 0), (5, 0.0, KIND_INT, b"bb", None, 3),
            (6, 0.0, KIND_DEL, b"ccc", None, 0)]]
    drv = run_ring(ops)
    expected = b"".join(mutations_record([as_row(m) for m in op], lsn=i)
                        for i, op in enumerate(ops))
    assert bytes(drv.stream) == expected


def test_ring_stream_split_into_files_with_torn_tail(tmp_path):
    ops = ring_ops(seed=2, n=300)
    drv = run_ring(ops)
    stream = bytes(drv.stream)
    # Cut the stream into WAL files at write-out boundaries (as the WAL writer rotates).
    cuts = drv.boundaries[1:-1:3] + [len(stream)]
    assert len(cuts) >= 3
    files, start = [], 0
    for no, end in enumerate(cuts, 1):
        data = file_header(shard=0, file_no=no, start_pos=start) + stream[start:end]
        files.append(write(tmp_path, data, file_name(0, no)))
        start = end
    # Tear the last file inside its final record.
    last_rec_pos = frame(stream)[-1][0]
    assert last_rec_pos >= cuts[-2]
    with open(files[-1], "r+b") as f:
        f.truncate(H + (last_rec_pos - cuts[-2]) + 20)

    listed = list_files(str(tmp_path))
    assert list(listed) == [0] and [p for _n, p in listed[0]] == files
    wfs = [read_file(p, last=i == len(files) - 1) for i, p in enumerate(files)]
    for a, b in zip(wfs, wfs[1:]):
        assert a.end_pos == b.start_pos and not a.torn
    assert wfs[-1].torn is True and wfs[-1].end_pos == last_rec_pos
    assert rows(decode(wfs)) == [as_row(m) for op in ops[:-1] for m in op]


# ---------------------------------------------------------------------------------
# list_files
# ---------------------------------------------------------------------------------


def test_list_files_orders_by_number_and_ignores_other_names(tmp_path):
    wal = [(0, 10_000_000_000), (0, 2), (0, 9_999_999_999), (1, 5), (0, 10), (12, 1), (1, 3)]
    for shard, no in wal:
        (tmp_path / file_name(shard, no)).write_bytes(b"")
    # An unpadded but well-formed name is still a WAL file.
    (tmp_path / "wal-1-4.log").write_bytes(b"")
    for other in ["MANIFEST", "seg-0000000001.seg", "wal-000-0000000001.log.tmp",
                  "wal-000-0000000001.lo", "xwal-000-0000000001.log", "wal-000.log",
                  "wal-000-0000000001-2.log", "wal-a00-0000000001.log", "wal--1.log",
                  "wal-000-.log", "wal-000-00000000 1.log", "wal-000--0000000001.log",
                  "WAL-000-0000000001.log"]:
        (tmp_path / other).write_bytes(b"")
    got = list_files(str(tmp_path))
    p = lambda name: str(tmp_path / name)  # noqa: E731
    assert got == {
        0: [(2, p(file_name(0, 2))), (10, p(file_name(0, 10))),
            (9_999_999_999, p(file_name(0, 9_999_999_999))),
            (10_000_000_000, p(file_name(0, 10_000_000_000)))],
        1: [(3, p(file_name(1, 3))), (4, p("wal-1-4.log")), (5, p(file_name(1, 5)))],
        12: [(1, p(file_name(12, 1)))],
    }


def test_list_files_empty_dir(tmp_path):
    assert list_files(str(tmp_path)) == {}


@pytest.mark.parametrize("room_lag", [0, 1024, 4096])
def test_has_room_agrees_with_append_while_the_room_base_lags(room_lag):
    """``has_room`` (a batch checks it before writing anything) must answer what
    ``append_prepared`` then does, also while the WAL bound holds the room base
    below ``written`` (it used to check ``written``: a batch found room, then
    its append failed after the batch's other shards were written)."""
    from fusedb.wal.ring import R_HEAD, R_WRITTEN
    _unlink_ring()
    ring = Ring(RING_NAME, RING_CAP, create=True)
    try:
        rec = ring.prepare_many([(1, 0.0, KIND_VALUE, b"k", b"v" * 100, 0)] * 2)
        for head in range(0, 3 * RING_CAP, 208):
            ring.hdr[R_HEAD] = head
            ring.hdr[R_WRITTEN] = head
            ring.hdr[R_ROOM] = max(0, head - room_lag)
            fits = ring.has_room(rec[2])
            assert fits == (ring.append_prepared(rec) != -1), (head, room_lag)
    finally:
        ring.close()
        posix_ipc.unlink_shared_memory(RING_NAME)
