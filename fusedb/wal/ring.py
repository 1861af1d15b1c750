"""The WAL ring: a shard's log records in shared memory, appended by writers under
the shard lock, moved to WAL files by the WAL writer.

Layout (docs/format.md, "WAL ring"; the numbers: fusedb.core.layout)::

    header u64[16]  [0] magic "FUSERNG1", [1] version, [2] capacity (bytes, multiple of 16),
                    [3] head: stream position after the last complete record,
                    [4] written: stream position written to the WAL file,
                    [5] durable: stream position fsynced,
                    [6] next LSN, [7] current WAL file number, [8] its start position,
                    [9] bytes of the shard's WAL files on disk (written by the WAL writer),
                    [10] room base: writers may append up to this position + capacity
    data  from offset 4096: stream position p is at data[p % capacity]

Positions only grow. Writers own ``head`` (under the shard lock) and publish it
only after the record is complete, so everything below ``head`` is whole records;
the WAL writer owns ``written``, ``durable``, the file slots, the byte count and
the room base. ``head - room <= capacity``: a writer that finds no room gets -1
and waits (back-pressure, never a dropped record). The room base is ``written``
while the shard's WAL files on disk are under their limit
(``Options.wal_limit_bytes``) and stays where it was while they are not, so the
WAL on disk grows at most one ring past the limit (fusedb.wal.writer,
``WalWriter._count``); ``room <= written`` always, so no unwritten byte is ever
overwritten. The ring outlives a killed process in
/dev/shm: the next open appends ``[written, head)`` to the WAL file before
replaying (salvage).
"""

from __future__ import annotations

import struct

import xxhash

from fusedb.core.entry import KIND_INT
from fusedb.core.layout import (R_CAP, R_HEAD, R_LSN, R_MAGIC, R_ROOM, R_VERSION,
                                RING_DATA_OFF, RING_HDR_WORDS, RING_MAGIC, RING_VERSION,
                                WAL_ONE_MUTATION, WAL_RECORD_ALIGN, ring_region_bytes)
# Names other modules import from here (the numbers live in fusedb.core.layout).
from fusedb.core.layout import (R_DURABLE, R_FILE_NO, R_FILE_START, R_WAL_BYTES,  # noqa: F401
                                R_WRITTEN)
from fusedb.errors import InvalidArgumentError
from fusedb.shm.region import Region
from fusedb.wal.format import BODY_HEADER, MUTATION, RECORD_HEADER, T_MUTATIONS, T_PAD, pad8, pad16

MAGIC = RING_MAGIC
LAYOUT_VERSION = RING_VERSION
DATA_OFF = RING_DATA_OFF
# Ring.append spells these sizes as literals (a global look-up per use would cost
# on the per-write path): 16 = the record header, 40 = body header + one mutation
# header, 56 = both; records are padded to 16. Checked here against the layout.
assert RECORD_HEADER.size == 16 and BODY_HEADER.size + MUTATION.size == 40
assert struct.calcsize(WAL_ONE_MUTATION) == 40 and WAL_RECORD_ALIGN == 16
_ZEROS = bytes(16)
_hash = xxhash.xxh3_64_intdigest
_pack_rec = RECORD_HEADER.pack_into
_pack_body = BODY_HEADER.pack_into
_pack_mut = MUTATION.pack_into
_pack_q = struct.Struct("<Q").pack_into
_pack_lt = struct.Struct("<II").pack_into
_pack_one = struct.Struct(WAL_ONE_MUTATION).pack_into   # body header + one mutation header


class Ring:
    """Views of one shard's WAL ring; one object per attached process. Writers
    (any process) append under the shard's lock; the shard's WAL writer
    (fusedb.wal.writer.WalWriter: a thread of the embedded process or of the
    shard's worker process) reads :meth:`chunks` and advances ``written`` and
    ``durable``, without the lock (see the module doc for who owns which slot)."""

    def __init__(self, nm: str, capacity: int = 0, create: bool = False):
        if create:
            assert capacity % WAL_RECORD_ALIGN == 0
            self.region = Region(nm, ring_region_bytes(capacity))
        else:
            self.region = Region(nm)
        buf = self.region.buf
        self.hdr = buf[0:8 * RING_HDR_WORDS].cast("Q")
        if create:
            self.hdr[R_MAGIC] = MAGIC
            self.hdr[R_VERSION] = LAYOUT_VERSION
            self.hdr[R_CAP] = capacity
        elif self.hdr[R_MAGIC] != MAGIC or self.hdr[R_VERSION] != LAYOUT_VERSION:
            raise ValueError(f"shared memory {nm} is not a FuseDB WAL ring of this version")
        self.cap = self.hdr[R_CAP]
        self.data = buf[DATA_OFF:DATA_OFF + self.cap]

    def close(self) -> None:
        self.data.release()
        self.hdr.release()
        self.region.close()

    # -- writers, under the shard lock -------------------------------------------------

    def _reserve(self, total: int) -> int:
        """Data offset for a record of ``total`` bytes, writing a PAD record first if
        it would cross the end; -1 if the ring has no room."""
        hdr = self.hdr
        head = hdr[R_HEAD]
        cap = self.cap
        off = head % cap
        padlen = cap - off if off + total > cap else 0
        if head + padlen + total - hdr[R_ROOM] > cap:
            return -1
        if padlen:
            d = self.data
            _pack_rec(d, off, 0, padlen - 16, T_PAD)
            _pack_q(d, off, _hash(d[off + 8:off + 16]))
            hdr[R_HEAD] = head + padlen
            off = 0
        return off

    def append(self, seq: int, exp: float, kind: int, key: bytes, value: bytes | None,
               ivalue: int) -> int:
        """Log one mutation; returns the stream position after it, or -1 (no room).
        The per-write hot path: three struct packs, one hash, two slice copies."""
        klen = len(key)
        if kind == KIND_INT:
            value = ivalue.to_bytes(8, "little", signed=True)
        vlen = len(value) if value is not None else 0
        body = 40 + ((klen + vlen + 7) & ~7)
        total = (body + 31) & ~15
        hdr = self.hdr
        head = hdr[R_HEAD]
        cap = self.cap
        off = head % cap
        if off + total > cap or head + total - hdr[R_ROOM] > cap:
            off = self._reserve(total)
            if off < 0:
                return -1
            head = hdr[R_HEAD]
        d = self.data
        lsn = hdr[R_LSN]
        _pack_one(d, off + 16, lsn, 1, 0, seq, exp, kind, 0, klen, vlen)
        p = off + 56
        d[p:p + klen] = key
        p += klen
        if vlen:
            d[p:p + vlen] = value
            p += vlen
        end = off + 16 + body
        if p < end:
            d[p:end] = _ZEROS[:end - p]
        _pack_lt(d, off + 8, body, T_MUTATIONS)
        _pack_q(d, off, _hash(d[off + 8:end]))
        hdr[R_LSN] = lsn + 1
        pos = head + total
        hdr[R_HEAD] = pos
        return pos

    def append_many(self, muts: list[tuple]) -> int:
        """Log several mutations (seq, exp, kind, key, value, ivalue) as one atomic
        record; returns the stream position after it, or -1 (no room)."""
        return self.append_prepared(self.prepare_many(muts))

    def prepare_many(self, muts: list[tuple]) -> tuple[list[tuple], int, int]:
        """Encode mutations for :meth:`append_prepared`: (parts, body bytes, record
        bytes). Raises InvalidArgumentError if the record is over half the ring."""
        parts = []
        for seq, exp, kind, key, value, ivalue in muts:
            if kind == KIND_INT:
                value = ivalue.to_bytes(8, "little", signed=True)
            parts.append((seq, exp, kind, key, value or b""))
        body = 16 + sum(MUTATION.size + pad8(len(k) + len(v)) for _s, _e, _k, k, v in parts)
        total = pad16(16 + body)
        if total > self.cap // 2:
            raise InvalidArgumentError(
                f"the batch's log record ({total} bytes) is over half the WAL ring "
                f"({self.cap} bytes): split the batch or raise wal_ring_bytes")
        return parts, body, total

    def has_room(self, total: int) -> bool:
        """Whether a record of ``total`` bytes fits now (what :meth:`_reserve`
        checks, without writing anything: room up to the room base + capacity,
        which lags ``written`` while the WAL files are at their limit)."""
        hdr = self.hdr
        head = hdr[R_HEAD]
        cap = self.cap
        off = head % cap
        padlen = cap - off if off + total > cap else 0
        return head + padlen + total - hdr[R_ROOM] <= cap

    def append_prepared(self, prepared: tuple[list[tuple], int, int]) -> int:
        """Log a record from :meth:`prepare_many`; the stream position after it,
        or -1 (no room)."""
        parts, body, total = prepared
        off = self._reserve(total)
        if off < 0:
            return -1
        d = self.data
        p = off + 32
        for seq, exp, kind, key, value in parts:
            _pack_mut(d, p, seq, exp, kind, 0, len(key), len(value))
            p += MUTATION.size
            n = len(key) + len(value)
            d[p:p + n] = key + value
            q = p + pad8(n)
            d[p + n:q] = _ZEROS[:q - p - n]
            p = q
        return self._seal(off, len(parts), body, total)

    def _seal(self, off: int, count: int, body: int, total: int) -> int:
        """Finish the MUTATIONS record of ``count`` mutations whose bytes are in
        place at ``off + 32``: body and record headers, checksum, LSN, head.
        Returns the stream position after it."""
        d = self.data
        hdr = self.hdr
        lsn = hdr[R_LSN]
        _pack_body(d, off + 16, lsn, count, 0)
        _pack_rec(d, off, 0, body, T_MUTATIONS)
        _pack_q(d, off, _hash(d[off + 8:off + 16 + body]))
        hdr[R_LSN] = lsn + 1
        pos = hdr[R_HEAD] + total
        hdr[R_HEAD] = pos
        return pos

    def append_encoded(self, blob: bytes | bytearray, count: int) -> int:
        """Log ``count`` mutations already encoded by :func:`encode_mutations` (in
        ``blob``, concatenated) as one record; the stream position after it, or -1
        (no room). Raises InvalidArgumentError if the record is over half the
        ring. A copy and a hash: for a leaf move, which encodes outside the
        shard locks and appends under them."""
        total = pad16(32 + len(blob))
        if total > self.cap // 2:
            raise InvalidArgumentError(
                f"a log record of {total} bytes is over half the WAL ring ({self.cap} bytes)")
        off = self._reserve(total)
        if off < 0:
            return -1
        self.data[off + 32:off + 32 + len(blob)] = blob
        return self._seal(off, count, 16 + len(blob), total)

    def free(self) -> int:
        """Bytes writers may still append (from the room base, see the module doc)."""
        return self.cap - (self.hdr[R_HEAD] - self.hdr[R_ROOM])

    # -- WAL writer -----------------------------------------------------------------------

    def chunks(self, start: int, end: int) -> list[memoryview]:
        """The stream bytes [start, end) as at most two views of the ring."""
        cap = self.cap
        a, b = start % cap, end % cap
        if end - start == 0:
            return []
        if a < b or (b == 0 and end > start):
            return [self.data[a:b or cap]]
        return [self.data[a:cap], self.data[0:b]]


def encode_mutations(muts) -> bytearray:
    """Mutations (seq, exp, kind, key, value, ivalue) encoded as in a MUTATIONS
    body, after its header (docs/format.md, "WAL"), concatenated: for
    :meth:`Ring.append_encoded`. No lock, no ring."""
    out = bytearray()
    for seq, exp, kind, key, value, ivalue in muts:
        if kind == KIND_INT:
            value = ivalue.to_bytes(8, "little", signed=True)
        elif value is None:
            value = b""
        n = len(key) + len(value)
        p = len(out)
        out += bytes(MUTATION.size + pad8(n))
        _pack_mut(out, p, seq, exp, kind, 0, len(key), len(value))
        out[p + MUTATION.size:p + MUTATION.size + n] = key + value
    return out
