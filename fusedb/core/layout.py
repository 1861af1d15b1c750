"""Every offset, stride, struct format and magic number of FuseDB's bytes, in
shared memory and in files: the single source of truth (docs/format.md describes
the same blocks in prose; where the two disagree, this module is right).

Data only: constants, ``struct`` format strings and small pure functions over
integers. It imports nothing from fusedb, so the compiled kernel (and its
generator or checker) can read it on its own. The modules that map the bytes
(fusedb.shm.meta, arena, slab, locks; fusedb.wal.ring, format; fusedb.core.segment,
manifest; fusedb.core.retry) take their numbers from here. tests/test_layout.py
pins each block against the class that maps it.

Integers are little-endian; shared memory is read in the host's byte order
(FuseDB assumes a little-endian host). ``pad8(x) = (x + 7) & ~7``.
"""

from __future__ import annotations


def pad8(n: int) -> int:
    """``n`` rounded up to a multiple of 8."""
    return (n + 7) & ~7


def pad16(n: int) -> int:
    """``n`` rounded up to a multiple of 16."""
    return (n + 15) & ~15


def magic_u64(tag: bytes) -> int:
    """An 8-byte ASCII tag read as a little-endian u64 (header slot 0 of a region)."""
    assert len(tag) == 8
    return int.from_bytes(tag, "little")


# == Meta block (docs/format.md, "Meta block") ======================================
# One shared-memory region per database, a sequence of arrays each padded to 8
# bytes (ML = max_leaves, MK = max key size, S = shards):
#   hdr u64[32], stats u64[8 S], locks u8[64 (S+2)], workers u64[4 S],
#   faults u64[8 S], options u8[4096], two routing copies (bound_len u32[ML],
#   route_leaf u32[ML], bounds u8[ML MK]), then the leaf table (shard u32[ML],
#   active i32[ML], frozen i32[ML], nsegs u32[ML], segs u64[MAX_SEGS ML],
#   seq u64[ML], fills u32[ML], writes u64[ML], mseq u64[ML]), then the client
#   registry clients u64[3 CLIENT_SLOTS] (last, so no other offset moved for it).

META_MAGIC = magic_u64(b"FUSEMET2")
#: 3: lock slots are robust mutexes; 4: the ``faults`` array; 5: the ``clients``
#: array and header slots M_SERVE_PID, M_UNLISTED, M_READY; 6: 16 stats words per
#: shard (``moves``).
META_VERSION = 6
#: Header slots, u64[META_HDR_WORDS]: magic, layout version, route version (a
#: seqlock: odd while the current copy changes), current routing copy (0 or 1),
#: ML, MK, S, next leaf id, next segment id, state, mode, router pid, length of
#: the options JSON, entries in routing copy 0 (copy 1: M_COUNT0 + 1, slot 14).
M_MAGIC, M_VERSION, M_ROUTE_VER, M_ROUTE_CUR, M_MAX_LEAVES, M_MAX_KEY, M_SHARDS, \
    M_NEXT_LEAF, M_NEXT_SEG, M_STATE, M_MODE, M_ROUTER_PID, M_OPTS_LEN, M_COUNT0 = range(14)
#: Slot 15: pid of the ``fusedb serve`` daemon that owns the database (it is the
#: router, so equal to M_ROUTER_PID), 0 when the owner is a plain
#: ``fusedb.open(path, shards=N)`` process; written once by the owner after open.
#: Slot 16: attaches since open that found every client slot taken by a live
#: process (attached, but not listed in ``clients``).
#: Slot 17: 1 once the owner's open has finished (set last, by
#: fusedb.runtime.bootstrap.open_owned): a client attaches only then.
#: Slots 18..31 zero.
M_SERVE_PID, M_UNLISTED, M_READY = 15, 16, 17
META_HDR_WORDS = 32
STATE_OPEN, STATE_CLOSED = 0, 1
MODE_EMBEDDED, MODE_MULTIPROCESS = 0, 1
#: Bytes of the options JSON area.
OPTS_BYTES = 4096

#: Stats, u64[S_WORDS] per shard (shard s owns stats[16s .. 16s+15]), in order:
#: merges, splits, segment bytes written, segment files written, write stalls,
#: buffer freezes, logical bytes written, WAL disk error (1 while the shard's WAL
#: writer fails to write or fsync the WAL, else 0), leaves moved away to another
#: shard (fusedb.shard.moving); words 9..15 zero.
STAT_FIELDS = ("merges", "splits", "segment_bytes_written", "segment_files_written",
               "write_stalls", "buffer_freezes", "logical_bytes_written", "wal_disk_error",
               "moves")
S_MERGES, S_SPLITS, S_SEG_BYTES, S_SEG_FILES, S_STALLS, S_FREEZES, S_LOGICAL, \
    S_DISK_ERROR, S_MOVES = range(9)
S_WORDS = 16

#: Worker slots, u64[W_WORDS] per shard: worker pid (written by the worker once it
#: runs), flush requests (incremented under the shard lock by flush()), flushes
#: done (the worker copies the request count it served), repairs done.
W_PID, W_FLUSH_REQ, W_FLUSH_DONE, W_REPAIRS = range(4)
W_WORDS = 4

#: Background disk errors, u64[F_WORDS] per shard (fusedb.core.retry): the
#: current error of the merge worker and of the WAL writer (packed errno << 8 |
#: step code; 0 healthy), the last error of either, the failed attempts of the
#: merge worker and of the WAL writer since open; words 5..7 zero.
F_CURRENT = (0, 1)
F_LAST = 2
F_FAILURES = (3, 4)
F_WORDS = 8

#: Lock slots: one 64-byte slot (one cache line) per lock, shard locks 0..S-1,
#: the meta lock S, the manifest lock S+1 (LOCK_EXTRA locks beyond the shards).
#: Bytes 0..MUTEX_BYTES-1: a robust process-shared pthread_mutex_t (40 bytes on
#: x86_64 glibc and musl, 48 on aarch64 glibc). Read as u32 words: the futex word
#: (glibc's __lock, word 0), glibc's __owner (word 2: the holder's thread id, for
#: messages only), the repair flag (word 12, byte 48) and the thread id of the
#: holder whose death set it (word 13, byte 52); words 14..15 zero.
LOCK_BYTES = 64
LOCK_WORDS = LOCK_BYTES // 4
LOCK_EXTRA = 2
MUTEX_BYTES = 48
L_FUTEX, L_OWNER, L_REPAIR, L_DEAD = 0, 2, 12, 13

#: Client registry: CLIENT_SLOTS slots of C_WORDS u64 each (slot i is
#: clients[C_WORDS i ..]): the pid of an attached client process (0: free), the
#: unix time it attached in microseconds, and the process's start time in clock
#: ticks since boot (field 22 of /proc/PID/stat), so that a pid reused by
#: another process does not pass for the client. Taken and read under the meta
#: lock (fusedb.shm.meta.Meta.register_client); one slot per attached handle,
#: the router and the worker processes take none.
CLIENT_SLOTS = 256
C_PID, C_SINCE, C_START = 0, 1, 2
C_WORDS = 3

#: Segments a leaf may name (the leaf table's segs row; Options.max_segments'
#: upper bound; a manifest leaf's ``segs`` list).
MAX_SEGS = 4


def meta_arrays(max_leaves: int, max_key: int, shards: int) -> list[tuple[str, int, str]]:
    """The meta block's arrays in order: (name, bytes before padding, memoryview
    cast format). Each starts at the previous one's offset plus pad8(its size)."""
    ml = max_leaves
    route = []
    for c in (0, 1):
        route += [(f"bound_len{c}", 4 * ml, "I"), (f"route_leaf{c}", 4 * ml, "I"),
                  (f"bounds{c}", ml * max_key, "B")]
    return [("hdr", 8 * META_HDR_WORDS, "Q"), ("stats", 8 * S_WORDS * shards, "Q"),
            ("locks", LOCK_BYTES * (shards + LOCK_EXTRA), "I"),
            ("workers", 8 * W_WORDS * shards, "Q"), ("faults", 8 * F_WORDS * shards, "Q"),
            ("options", OPTS_BYTES, "B")] + route + [
            ("shard", 4 * ml, "I"), ("active", 4 * ml, "i"), ("frozen", 4 * ml, "i"),
            ("nsegs", 4 * ml, "I"), ("segs", 8 * MAX_SEGS * ml, "Q"), ("seq", 8 * ml, "Q"),
            ("fills", 4 * ml, "I"), ("writes", 8 * ml, "Q"), ("mseq", 8 * ml, "Q"),
            ("clients", 8 * C_WORDS * CLIENT_SLOTS, "Q")]


def meta_offsets(max_leaves: int, max_key: int, shards: int) -> dict[str, int]:
    """Byte offset of each meta block array."""
    out, off = {}, 0
    for name, size, _fmt in meta_arrays(max_leaves, max_key, shards):
        out[name] = off
        off += pad8(size)
    return out


def meta_region_bytes(max_leaves: int, max_key: int, shards: int) -> int:
    """Size in bytes of the shared-memory region of a meta block."""
    return sum(pad8(size) for _n, size, _f in meta_arrays(max_leaves, max_key, shards))


def shard_words(view, no: int, stride: int):
    """Shard ``no``'s part of a per-shard u64 array (``stride`` words per shard:
    S_WORDS, W_WORDS, F_WORDS): a slice of ``view`` sharing its memory."""
    return view[no * stride:(no + 1) * stride]


# == Arena (docs/format.md, "Arena") ================================================
# header u64[8], free stack u32[nslabs], zero pad to the next 4096-byte boundary,
# then nslabs slabs of slab_bytes each.

ARENA_MAGIC = magic_u64(b"FUSEARN1")
ARENA_VERSION = 1
#: Header slots: magic, layout version, slab count, slab bytes, slots per slab,
#: free-stack top (free[0 .. top) are free slab numbers); 6..7 zero.
A_MAGIC, A_VERSION, A_NSLABS, A_SLAB_BYTES, A_NSLOTS, A_FREE_TOP = range(6)
ARENA_HDR_BYTES = 64
#: Slabs start on a boundary of this many bytes (a page).
ARENA_ALIGN = 4096


def arena_data_off(nslabs: int) -> int:
    """Byte offset of slab 0 in an arena of ``nslabs`` slabs."""
    return (ARENA_HDR_BYTES + 4 * nslabs + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1)


def arena_region_bytes(nslabs: int, slab_bytes: int) -> int:
    """Size in bytes of the shared-memory region of an arena."""
    return arena_data_off(nslabs) + nslabs * slab_bytes


# == Buffer slab (docs/format.md, "Buffer slab") ====================================
# header u32[16], index u32[cap], then the slot columns (each S = nslots long, each
# starting on an 8-byte boundary), then the heap to the end of the slab.

SLAB_HDR_BYTES = 64
#: Header slots (u32): leaf id, slots used, heap bytes used, state, leaves whose
#: frozen buffer this is (2 just after a split), low and high 32 bits of the WAL
#: stream position of the first record applied to the buffer; 7..15 unused.
H_LEAF, H_USED, H_HEAP, H_STATE, H_REFS, H_FIRST_LO, H_FIRST_HI = range(7)
SLAB_FREE, SLAB_ACTIVE, SLAB_FROZEN = 0, 1, 2
#: Slot columns in order: (name, bytes per slot, memoryview cast format).
SLAB_COLUMNS = (("hash", 8, "Q"), ("seq", 8, "Q"), ("exp", 8, "d"), ("koff", 4, "I"),
                ("klen", 4, "I"), ("voff", 4, "I"), ("vlen", 4, "I"), ("vcap", 4, "I"),
                ("kind", 1, "B"))


def slab_index_cap(nslots: int) -> int:
    """Index positions of a slab: the smallest power of two >= 2 nslots (and >= 4)."""
    return 1 << max(2, (2 * nslots - 1).bit_length())


def slab_offsets(nslots: int) -> tuple[int, dict[str, int], int]:
    """(index offset, column offsets by name, heap offset) in a slab of ``nslots``."""
    off = pad8(SLAB_HDR_BYTES + 4 * slab_index_cap(nslots))
    cols = {}
    for name, size, _fmt in SLAB_COLUMNS:
        cols[name] = off
        off = pad8(off + size * nslots)
    return SLAB_HDR_BYTES, cols, off


# == WAL ring (docs/format.md, "WAL ring") ==========================================
# header u64[16], data from RING_DATA_OFF: stream position p is at data[p % capacity].

RING_MAGIC = magic_u64(b"FUSERNG1")
RING_VERSION = 1
#: Header slots: magic, layout version, capacity (bytes, a multiple of 16), head,
#: written (written to the WAL file), durable (fsynced), next LSN, current WAL
#: file number, its start position, bytes of the shard's WAL files on disk, room
#: base (writers may append up to it + capacity); 11..15 zero.
R_MAGIC, R_VERSION, R_CAP, R_HEAD, R_WRITTEN, R_DURABLE, R_LSN, R_FILE_NO, R_FILE_START, \
    R_WAL_BYTES, R_ROOM = range(11)
RING_HDR_WORDS = 16
RING_DATA_OFF = 4096


def ring_region_bytes(capacity: int) -> int:
    """Size in bytes of the shared-memory region of a ring of ``capacity`` bytes."""
    return RING_DATA_OFF + capacity


# == WAL file and record (docs/format.md, "WAL") ====================================
#   file        := file_header record*
#   file_header := magic "FUSEWAL1" version:u32 shard:u32 file_no:u64 start_pos:u64
#                  reserved[32]                                        (64 bytes)
#   record      := checksum:u64 length:u32 type:u32 body[length] zero-pad to 16
#   body(MUTATIONS) := lsn:u64 count:u32 reserved:u32 mutation{count}
#   mutation    := seq:u64 exp:f64 kind:u8 pad:u8 klen:u16 vlen:u32 key value pad8

WAL_MAGIC = b"FUSEWAL1"
WAL_VERSION = 1
WAL_FILE_HEADER = "<8sIIQQ32x"       # 64 bytes
WAL_RECORD_HEADER = "<QII"           # checksum, length, type: 16 bytes
WAL_BODY_HEADER = "<QII"             # lsn, count, reserved: 16 bytes
WAL_MUTATION = "<QdBBHI"             # seq, exp, kind, pad, klen, vlen: 24 bytes
#: A body header followed by one mutation header (a single-mutation record).
WAL_ONE_MUTATION = WAL_BODY_HEADER + WAL_MUTATION[1:]
T_MUTATIONS, T_PAD = 1, 2
#: Records start and end on multiples of this many bytes.
WAL_RECORD_ALIGN = 16


# == Segment file (docs/format.md, "Segment file") ==================================
#   header hash seq exp voff koff kind buckets order keys vals footer, each
#   section starting on an 8-byte boundary.

SEG_MAGIC = b"FUSESEG\x00"
SEG_END_MAGIC = b"FUSEEND\x00"
SEG_VERSION = 1
#: magic, version, flags, count, bucket bits, reserved, keys bytes, values bytes,
#: max seqno, min seqno: 64 bytes.
SEG_HEADER = "<8sIIQIIQQQQ"
#: xxh3_64 of everything before the footer, end magic: 16 bytes.
SEG_FOOTER = "<Q8s"
SEG_HEADER_BYTES = 64
SEG_FOOTER_BYTES = 16


def segment_layout(n: int, bits: int, keys_bytes: int,
                   vals_bytes: int) -> tuple[dict[str, int], int]:
    """Byte offset of each section of a segment of ``n`` entries with 2^``bits``
    buckets, and the total file size."""
    sizes = [("hash", 8 * n), ("seq", 8 * n), ("exp", 8 * n), ("voff", 8 * (n + 1)),
             ("koff", 4 * (n + 1)), ("kind", n), ("buckets", 4 * ((1 << bits) + 1)),
             ("order", 4 * n), ("keys", keys_bytes), ("vals", vals_bytes)]
    off = SEG_HEADER_BYTES
    offsets = {}
    for name, size in sizes:
        offsets[name] = off
        off += pad8(size)
    return offsets, off + SEG_FOOTER_BYTES


# == Manifest and identity file (docs/format.md, "Manifest", "Identity file") =======

MANIFEST_MAGIC = b"FUSEMAN1\n"
MANIFEST_VERSION = 1
IDENTITY_FORMAT = "fusedb"
IDENTITY_VERSION = 1
