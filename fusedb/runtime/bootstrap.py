"""Opening a database as its owner (embedded, or the router of a multiprocess
one): everything from the directory check to the shared memory, before any
thread or process starts.

Open = refuse a directory that is not FuseDB's (fusedb.runtime.identity), take
LOCK (fusedb.runtime.dirlock), remove shared-memory objects a crashed run left
(after salvaging their WAL rings), read the MANIFEST, verify every segment it
names, delete files of its own it does not name, replay the WAL, record the
layout options in FUSEDB, create (and reserve) the shared memory, load the
leaves and the routing table into it.

Called by the owning role's constructor (fusedb.runtime.embedded.EmbeddedStore,
fusedb.router.router.RouterStore) on the opening thread, holding LOCK and no
other lock (nothing else can see the database yet).
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

from fusedb.core import manifest, retry
from fusedb.core.layout import M_READY
from fusedb.core.manifest import LeafRecord, ManifestData
from fusedb.core.segment import MAGIC as SEGMENT_MAGIC, Segment, file_name
from fusedb.core.fileio import DIR_MODE, shared_group
from fusedb.errors import DiskError, FuseDBError, NotADatabaseError, SharedMemoryError
from fusedb.options import Options
from fusedb.runtime import identity
from fusedb.runtime import dirlock
from fusedb.runtime.dirlock import DirLock
from fusedb.shm import region
from fusedb.shm.arena import Arena, region_bytes as arena_region_bytes
from fusedb.shm.meta import M_NEXT_LEAF, M_NEXT_SEG, Meta, region_bytes as meta_region_bytes
from fusedb.wal import recovery
from fusedb.wal.ring import DATA_OFF as RING_DATA_OFF, R_FILE_NO, Ring

log = logging.getLogger("fusedb")


class Recovered(NamedTuple):
    """What recovery found: the manifest (after replay), the open segments it
    names (segment id -> Segment), the number of WAL mutations replayed, the WAL
    file number to go on from, and the sizes of the meta block (leaf slots,
    bound slot bytes). Made by :func:`recover` on the thread opening an embedded
    or router process (LOCK held, no shared memory yet) and read by
    :func:`create_shm` and :func:`load_leaves` in the same open; no lock."""
    man: ManifestData
    segs: dict
    replayed: int
    first_wal_no: int
    max_leaves: int
    max_key: int


def lock_directory(path: str, opts: Options) -> DirLock:
    """Create the directory if missing, refuse one that is not FuseDB's (before
    LOCK: a foreign one stays as it was), take LOCK, and share the directory
    with ``opts.group`` if given (fusedb.runtime.dirlock.share). Raises what
    dirlock.check_directory and DirLock raise; NotADatabaseError if ``path``
    (or a parent) is a file; PermissionDeniedError if this user may not create,
    read or write it, or share it with that group."""
    try:
        os.makedirs(path, DIR_MODE, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise NotADatabaseError(f"{e.filename or path} is a file, not a directory: a FuseDB "
                                f"database is a directory; pass the path of a directory (a "
                                f"missing or empty one creates a database)") from None
    except PermissionError as e:
        raise dirlock.permission_denied(path, e, "write permission on the parent of") \
            from None
    try:
        dirlock.check_directory(path)
    except PermissionError as e:
        raise dirlock.permission_denied(path, e, "read, write and search (rwx) permission "
                                                 "on") from None
    lock = DirLock(path, region.tag_for(path), opts.close_timeout)
    if opts.group is not None:
        try:
            dirlock.share(path, opts.group)
        except BaseException:
            lock.release()
            raise
    return lock


def recover(path: str, tag: str, opts: Options, segs: dict) -> Recovered:
    """Recover the directory's files (see the module docstring) up to, not
    including, the shared memory. The segments the manifest names are opened
    into ``segs`` (segment id -> Segment: the runtime's cache, closed by its
    teardown whatever happens). Raises CorruptionError, InvalidArgumentError
    (options that cannot hold what is stored), OSError."""
    ident = identity.read(path)
    recovery.salvage(tag, path)
    region.remove_leftovers(tag)
    man = manifest.read(path)
    if man is None:
        s = opts.shards
        if opts.split_keys:
            bounds = [b""] + list(opts.split_keys)
        else:
            bounds = [b"" if i == 0 else bytes([256 * i // s]) for i in range(s)]
        n = len(bounds)
        man = ManifestData([LeafRecord(lo, 0, [], i * s // n) for i, lo in enumerate(bounds)],
                           1, {"shards": s})
    referenced = {s for lf in man.leaves for s in lf.segs}
    for segid in sorted(referenced):
        segs[segid] = Segment(os.path.join(path, file_name(segid)), segid)
    _remove_garbage(path, referenced)
    replayed, next_wal = recovery.replay(path, man, segs, opts.clock())
    # The recorded layout options against the requested ones (after replay, the
    # segments hold everything, so what they hold can be measured if needed).
    layout = identity.reconcile(ident["layout"] if ident else None, opts,
                                lambda: _stored_maxima(segs))
    if ident is None or ident["layout"] != layout:
        identity.write(path, layout)
    # Bound slots hold any stored key: a split may pick one as a bound.
    max_key = max([layout["max_key_size"]] + [len(lf.lo) for lf in man.leaves])
    return Recovered(man, segs, replayed, max(next_wal.values(), default=0),
                     max(opts.max_leaves, len(man.leaves)), max_key)


def create_shm(rt, rec: Recovered) -> tuple[list[Arena], list[Ring]]:
    """Create (and reserve) the meta block (``rt.meta``) and each shard's arena
    and WAL ring; their names go to ``rt.shm_names`` (unlinked at close, or by
    the teardown of a failed open) and the mappings to ``rt.regions``. Raises
    SharedMemoryError naming /dev/shm and the bytes needed when it has no room."""
    opts, nm, tag = rt.opts, region.name, rt.tag
    sizes = (meta_region_bytes(rec.max_leaves, rec.max_key, opts.shards),
             arena_region_bytes(opts.slabs_per_arena, opts.buffer_bytes),
             RING_DATA_OFF + opts.wal_ring_bytes)
    free = region.free_bytes()
    need = sizes[0] + opts.shards * (sizes[1] + sizes[2])

    def no_room(why: str) -> SharedMemoryError:
        return SharedMemoryError(
            f"{region.SHM_DIR} has {free:,} bytes free and this database needs {need:,} "
            f"bytes of shared memory while open (a {sizes[0]:,}-byte meta block, and "
            f"per shard ({opts.shards}) a {sizes[1]:,}-byte arena and a {sizes[2]:,}-byte "
            f"WAL ring){why}. Free space in {region.SHM_DIR} or enlarge it, or open with "
            f"a smaller arena_bytes or wal_ring_bytes or fewer shards")
    # Refused before anything is created: where /dev/shm is as large as memory,
    # filling it would bring the OOM killer before ENOSPC.
    if need > free:
        raise no_room("")
    arenas: list[Arena] = []
    rings: list[Ring] = []
    try:
        rt.meta = Meta(nm(tag, "meta"), rec.max_leaves, rec.max_key, opts.shards, create=True)
        rt.shm_names.append(("shm", nm(tag, "meta")))
        for i in range(opts.shards):
            arenas.append(Arena(nm(tag, f"arena{i}"), opts.slabs_per_arena,
                                opts.buffer_bytes, opts.buffer_slots, create=True))
            rt.regions.append(arenas[-1])
            rt.shm_names.append(("shm", nm(tag, f"arena{i}")))
            rings.append(Ring(nm(tag, f"wal{i}"), opts.wal_ring_bytes, create=True))
            rt.regions.append(rings[-1])
            rt.shm_names.append(("shm", nm(tag, f"wal{i}")))
    except SharedMemoryError as e:
        raise no_room(f": {e}") from e
    return arenas, rings


def load_leaves(meta: Meta, rec: Recovered, rings: list[Ring], shards: int) -> None:
    """Put the recovered leaves, the routing table and the id counters into the
    fresh meta block, and the WAL file number into each ring. Leaves keep their
    shard if the shard count is unchanged; otherwise they are dealt out again in
    contiguous runs (buffers are empty at open, so it is free)."""
    man = rec.man
    for ring in rings:
        ring.hdr[R_FILE_NO] = rec.first_wal_no
    nleaves = len(man.leaves)
    keep = man.options.get("shards") == shards
    for leaf_id, lf in enumerate(man.leaves):
        shard = lf.shard if keep else leaf_id * shards // nleaves
        meta.init_leaf(leaf_id, shard, lf.seq, lf.segs)
    meta.route_write([(lf.lo, i) for i, lf in enumerate(man.leaves)])
    meta.hdr[M_NEXT_LEAF] = nleaves
    referenced = {s for lf in man.leaves for s in lf.segs}
    meta.hdr[M_NEXT_SEG] = max([man.next_seg] + [s + 1 for s in referenced])


def open_owned(rt, open_fn) -> None:
    """Run the open steps ``open_fn()`` of an owning role ``rt`` (embedded or
    router; LOCK already taken). If a step fails, release everything made so far
    (``rt.teardown()``) and raise the error: a disk error as DiskError
    (:func:`open_error`), anything else unchanged. Once every step succeeded,
    the meta block is marked ready (M_READY): clients attach only then. The
    shared memory of a database whose directory is shared with a group
    (fusedb.core.fileio.shared_group) is given that group and mode 0660 first."""
    try:
        open_fn()
        gid = shared_group(rt.path)
        if gid is not None:      # before M_READY: no client finds it owner-only
            region.share(rt.shm_names, gid)
        rt.meta.hdr[M_READY] = 1
    except BaseException as e:
        rt.teardown()
        err = open_error(rt.path, e)
        if err is not None:
            raise err from e
        raise


def recover_and_map(rt) -> tuple[Recovered, list, list]:
    """The first open steps of an owning role ``rt``: :func:`recover` the files
    (``rt.replayed`` is set), then :func:`create_shm`. Returns (what was
    recovered, the arenas, the WAL rings), one arena and ring per shard."""
    rec = recover(rt.path, rt.tag, rt.opts, rt.segcache)
    rt.replayed = rec.replayed
    arenas, rings = create_shm(rt, rec)
    return rec, arenas, rings


def open_error(path: str, e: BaseException) -> BaseException | None:
    """The error to raise instead of ``e`` when an open failed on an OSError
    that is not already a FuseDBError: a disk error (ENOSPC, EDQUOT, EIO) as
    DiskError, a PermissionError as PermissionDeniedError; else None."""
    if isinstance(e, PermissionError) and not isinstance(e, FuseDBError):
        return dirlock.permission_denied(path, e, "read and write permission on the files "
                                                  "of")
    disk = retry.transient(e)
    if disk is None or isinstance(e, FuseDBError):
        return None
    return DiskError(disk.errno, f"cannot open {path}: {disk.strerror} while "
                     f"recovering it ({disk.filename or 'writing its files'}); "
                     f"nothing was changed or lost: free space (or fix the "
                     f"device) and open it again")


def _stored_maxima(segs: dict) -> dict:
    """The longest key and value in the open segments (bytes; 0 if none)."""
    k = v = 0
    for seg in segs.values():
        if seg.count:
            run = seg.to_run()
            k, v = max(k, int(run.klen.max())), max(v, int(run.vlen.max()))
    return {"max_key_size": k, "max_value_size": v}


def _remove_garbage(path: str, referenced: set[int]) -> None:
    """Delete the garbage of this database's own files: temporary files of its
    publications (``seg-<16 hex>.fseg.tmp``, ``MANIFEST.tmp``, ``FUSEDB.tmp``:
    fusedb.core.fileio.publish names them ``<file>.tmp``) and segment files
    (``seg-<16 hex>.fseg`` with a segment's magic) the manifest does not name.
    Nothing else is touched, whatever its name (invariant 8)."""
    removed = 0
    for entry in os.scandir(path):
        if entry.is_file(follow_symlinks=False) and _own_garbage(path, entry.name, referenced):
            os.unlink(entry.path)
            removed += 1
    if removed:
        log.info("removed %d unreferenced or temporary file(s) of %s", removed, path)


def _own_garbage(path: str, fn: str, referenced: set[int]) -> bool:
    tmp = fn.endswith(".tmp")
    base = fn[:-4] if tmp else fn
    if base in (manifest.FILE, identity.IDENTITY_FILE):
        return tmp
    if not (base.startswith("seg-") and base.endswith(".fseg")):
        return False
    try:
        segid = int(base[4:-5], 16)
    except ValueError:
        return False
    if segid < 0 or base != file_name(segid):
        return False           # not exactly the name FuseDB gives a segment
    if tmp:
        return True
    if segid in referenced:
        return False
    if _starts_with(os.path.join(path, fn), SEGMENT_MAGIC):
        return True
    log.warning("%s is not a segment (bad magic); left in place", os.path.join(path, fn))
    return False


def _starts_with(path: str, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:           # unreadable: not known to be ours
        return False
