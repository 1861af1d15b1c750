"""The manifest: which leaves exist, their key ranges, seqnos and live segments.

File ``MANIFEST`` in the database directory (docs/format.md, "Manifest")::

    line 1   b"FUSEMAN1\\n"
    line 2   JSON object (UTF-8, one line), see :class:`ManifestData`
    line 3   xxh3_64 of line 2 (without its newline) as 16 lowercase hex digits, b"\\n"

It is replaced atomically (temp -> fsync -> rename -> fsync dir) after every merge
or split publishes, and on close. Segment files it does not name are garbage.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import xxhash

from fusedb.errors import CorruptionError
from fusedb.core import fileio
from fusedb.core.fileio import fsync_dir, publish, read_if_exists
from fusedb.core.layout import MANIFEST_MAGIC, MANIFEST_VERSION

FILE = "MANIFEST"
MAGIC = MANIFEST_MAGIC
FORMAT_VERSION = MANIFEST_VERSION


@dataclass
class LeafRecord:
    """One leaf as the manifest records it (pure value, any thread). Made by
    :func:`parse`, by fusedb.runtime.catalog.manifest_data (copied from the meta
    block under each shard lock in turn), by recovery for a new database, and by
    ``fusedb repair``; changed in place only by the WAL replay of an open, before
    any shared memory exists. The next record's ``lo`` is this leaf's exclusive
    upper bound."""

    lo: bytes          # inclusive lower bound (b"" for the first leaf)
    seq: int           # last seqno materialised in the leaf's segments
    segs: list[int]    # live segment ids, newest first
    shard: int = 0


@dataclass
class ManifestData:
    """The content of a MANIFEST (docs/format.md, "Manifest"): the leaves, the
    next unused segment id, the persisted options (the engine stores
    ``{"shards": S}``). A plain value owned by the thread that made it, no lock:
    :func:`read`/:func:`parse` (recovery at open, a worker process's shard
    rebuild, ``fusedb check``/``dump``/``repair``) or
    fusedb.runtime.catalog.manifest_data (under the manifest lock, then passed
    to :func:`write`); the WAL replay of an open updates it in place."""

    leaves: list[LeafRecord] = field(default_factory=list)   # sorted by lo
    next_seg: int = 1
    options: dict = field(default_factory=dict)               # persisted format options

    def to_json(self) -> bytes:
        body = {
            "version": FORMAT_VERSION,
            "next_seg": self.next_seg,
            "options": self.options,
            "leaves": [{"lo": lf.lo.hex(), "seq": lf.seq, "segs": lf.segs, "shard": lf.shard}
                       for lf in self.leaves],
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def write(dirpath: str, data: ManifestData) -> int:
    """Publish ``data`` as the manifest. The directory is fsynced first, so the
    names of the segment files it lists (published without a directory fsync of
    their own) are durable before any manifest names them."""
    fsync_dir(dirpath)
    return publish(os.path.join(dirpath, FILE), _chunks(data), point="manifest.write")


def _chunks(data: ManifestData) -> list[bytes]:
    body = data.to_json()
    digest = xxhash.xxh3_64_hexdigest(body).encode()
    return [MAGIC, body, b"\n", digest, b"\n"]


def stage(dirpath: str, data: ManifestData) -> int:
    """Write ``data`` as ``MANIFEST.tmp``, fsynced (the directory first, as in
    :func:`write`), to be made the manifest by :func:`commit`: a leaf move renames
    it while holding the shard locks, so no process ever sees the move in
    shared memory while the durable manifest says otherwise (docs/design.md,
    "Balancing"). Raises OSError (the temporary file removed)."""
    fsync_dir(dirpath)
    return fileio.stage(os.path.join(dirpath, FILE), _chunks(data), point="manifest.write")


def commit(dirpath: str) -> None:
    """Rename the staged manifest over ``MANIFEST`` (no directory fsync: the
    caller does it after releasing its locks). Raises OSError."""
    fileio.commit(os.path.join(dirpath, FILE))


def discard(dirpath: str) -> None:
    """Remove a staged manifest that will not be committed."""
    fileio.discard(os.path.join(dirpath, FILE))


def read(dirpath: str) -> ManifestData | None:
    """The manifest of ``dirpath``; None if the database has none yet. Raises
    CorruptionError (see :func:`parse`)."""
    path = os.path.join(dirpath, FILE)
    raw = read_if_exists(path)
    return None if raw is None else parse(raw, path)


def parse(raw: bytes, path: str) -> ManifestData:
    """The manifest held by ``raw`` (the bytes of the file at ``path``, named in
    errors). Raises CorruptionError(message, path, offset) on a bad magic, a
    malformed or truncated file, a checksum mismatch, an unknown version or an
    unreadable body (docs/format.md, "Manifest")."""
    if not raw.startswith(MAGIC):
        raise CorruptionError(f"manifest has a bad magic at offset 0: {path}", path, 0)
    lines = raw[len(MAGIC):].split(b"\n")
    if len(lines) != 3 or lines[2] != b"":
        raise CorruptionError(f"manifest truncated or malformed at offset {len(raw)}: {path}",
                              path, len(raw))
    body, digest = lines[0], lines[1]
    if xxhash.xxh3_64_hexdigest(body).encode() != digest:
        raise CorruptionError(f"manifest checksum mismatch at offset {len(MAGIC)}: {path}",
                              path, len(MAGIC))
    try:
        obj = json.loads(body)
        if obj["version"] != FORMAT_VERSION:
            raise CorruptionError(f"unknown manifest format version {obj['version']} at "
                                  f"offset {len(MAGIC)}: {path}", path, len(MAGIC))
        leaves = [LeafRecord(bytes.fromhex(x["lo"]), int(x["seq"]), [int(s) for s in x["segs"]],
                             int(x.get("shard", 0))) for x in obj["leaves"]]
        return ManifestData(leaves, int(obj["next_seg"]), dict(obj.get("options", {})))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptionError(f"manifest body unreadable at offset {len(MAGIC)}: {path}: {e}",
                              path, len(MAGIC)) from e
