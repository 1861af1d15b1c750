"""Every helper that needs FuseDB's internals, by name: the one place to
re-point when they move (``INTERNALS`` lists what is reached). ``db`` is an
open handle; ``no`` a shard number. Internal modules are imported inside the
helpers, so a moved name breaks only the tests that use that helper."""

from __future__ import annotations

import os

__all__ = ["prefix_end", "options", "mode_role", "shard_count", "shard_lock", "meta_lock",
           "manifest_lock", "lock_of", "lock_holders", "locks_need_repair", "cached_segments",
           "replayed", "leaf_of", "leaves", "leaf_bounds", "leaves_spanned", "shard_of_leaf",
           "segments_of", "live_segments", "open_segment", "writes_per_shard", "next_leaf_id",
           "max_key_slot", "routing_changing", "repairs", "background_state", "stop_worker",
           "merge_leaf", "forget_segment", "identity_checksum", "write_out_wal",
           "ring_positions", "crash", "power_cut", "INTERNALS"]


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with ``prefix`` (None: no bound),
    as ``scan(prefix=...)`` computes it."""
    from fusedb.api.scan import prefix_end as end
    return end(prefix)


def options(db):
    """The handle's resolved :class:`fusedb.Options` (in a client: the router's)."""
    return db._store.opts


def mode_role(db) -> str:
    """"embedded", "router" or "client" (the class of the handle's role object)."""
    from fusedb.runtime.client import ClientStore
    from fusedb.runtime.embedded import EmbeddedStore
    if isinstance(db._store, EmbeddedStore):
        return "embedded"
    return "client" if isinstance(db._store, ClientStore) else "router"


def shard_count(db) -> int:
    return len(db._shards)


def shard_lock(db, no: int):
    """Shard ``no``'s lock (a threading lock embedded, a ProcLock multiprocess)."""
    return db._shards[no].lock


def meta_lock(db):
    return db._store.meta_lock


def manifest_lock(db):
    return db._store.manifest_lock


def lock_of(db, which):
    """``which`` = a shard number, "meta" or "manifest"."""
    if which == "meta":
        return meta_lock(db)
    if which == "manifest":
        return manifest_lock(db)
    return shard_lock(db, which)


def lock_holders(db) -> list:
    """Per shard: the pid holding its lock (multiprocess), or 0."""
    return [s.lock.holder() for s in db._shards]


def locks_need_repair(db) -> bool:
    """Whether any shard lock was left by a dead holder and is not repaired yet."""
    return any(s.lock.needs_repair() for s in db._shards)


def cached_segments(db) -> int:
    """Segments open in this process's segment cache."""
    return len(db._store.segcache)


def replayed(db) -> int:
    """WAL records replayed by the recovery at this open."""
    return db._store.replayed


def leaf_of(db, key: bytes) -> int:
    """The id of the leaf that owns ``key`` now."""
    return db._routes.route(key)[1]


def leaves(db) -> list[int]:
    """Leaf ids in key order."""
    return list(db._routes.current()[2])


def leaf_bounds(db) -> list[bytes]:
    """Lower bounds of the leaves, in key order (from the shared routing table)."""
    return db._store.meta.routes()[0]


def leaves_spanned(db, start: bytes, stop: bytes | None) -> int:
    """How many leaves hold part of the key range [start, stop)."""
    bounds = leaf_bounds(db)
    return sum(1 for i, b in enumerate(bounds)
               if (stop is None or b < stop)
               and (i + 1 == len(bounds) or bounds[i + 1] > start))


def shard_of_leaf(db, leaf: int) -> int:
    return int(db._store.meta.shard[leaf])


def segments_of(db, leaf: int) -> list[int]:
    """Segment ids of ``leaf``, newest first."""
    return db._store.meta.segs_of(leaf)


def live_segments(db) -> set[int]:
    """Every segment id the routing table refers to."""
    meta = db._store.meta
    return {s for leaf in meta.route_snapshot()[2] for s in meta.segs_of(leaf)}


def open_segment(db, segid: int):
    """The :class:`fusedb.core.segment.Segment` with id ``segid``."""
    return db._store.segments.open_segments([segid])[0]


def writes_per_shard(db) -> list[int]:
    """Writes counted per shard (the scheduler's per-leaf write counters, summed)."""
    meta = db._store.meta
    out = [0] * len(db._shards)
    for leaf in db._routes.current()[2]:
        out[meta.shard[leaf]] += meta.writes[leaf]
    return out


def next_leaf_id(db) -> int:
    """The leaf-id counter (the next leaf a split would take)."""
    from fusedb.core.layout import M_NEXT_LEAF
    return int(db._store.meta.hdr[M_NEXT_LEAF])


def max_key_slot(db) -> int:
    """Bytes the shared routing table reserves per leaf bound."""
    return db._store.meta.max_key


def routing_changing(db) -> bool:
    """Whether the routing table's version is odd (a copy being switched)."""
    from fusedb.core.layout import M_ROUTE_VER
    return bool(db._store.meta.hdr[M_ROUTE_VER] % 2)


def repairs(db, no: int) -> int:
    """Times shard ``no``'s worker rebuilt the shard (a lock holder died)."""
    from fusedb.core.layout import W_REPAIRS
    return int(db._store.meta.worker_slots(no)[W_REPAIRS])


def background_state(db, no: int) -> dict:
    """Shard ``no``'s background I/O state (as ``stats()["workers"]``, without psutil)."""
    from fusedb.core.retry import shard_state
    return shard_state(db._store.meta.shard_faults(no))


def stop_worker(db, no: int = 0) -> None:
    """Embedded: stop shard ``no``'s merge thread, so the test merges by hand."""
    db._store.workers[no].stop()


def merge_leaf(db, leaf: int, full: bool = False, split: bool = False):
    """Merge ``leaf`` now in this thread (its worker must be stopped)."""
    merger = db._store.mergers[shard_of_leaf(db, leaf)]
    return merger.merge_leaf(leaf, full=full, split=split)


def move_leaf(db, leaf: int, dst: int) -> bool:
    """Move ``leaf`` to shard ``dst`` now in this thread (embedded; its shard's
    worker stopped), as its merge loop does when balancing."""
    from fusedb.shard.moving import move_leaf as move
    return move(db._store.mergers[shard_of_leaf(db, leaf)], leaf, dst)


def orphans(db, no: int) -> list:
    """Embedded: shard ``no``'s old slabs of moved leaves not yet freed."""
    return db._store.mergers[no].orphans


def forget_segment(db, segid: int) -> None:
    """Drop segment ``segid`` from this process's segment cache (as a process that
    never opened it)."""
    db._store.segments.forget([segid])


def identity_checksum(body: dict) -> str:
    """The checksum the identity file ``FUSEDB`` carries for document ``body``
    (without its "checksum" field)."""
    from fusedb.runtime import identity
    return identity.xxhash.xxh3_64_hexdigest(identity._canonical(body))


def write_out_wal(db, no: int = 0) -> None:
    """Embedded: have shard ``no``'s WAL writer write the ring out and fsync now."""
    db._store.wal_writers[no].sync_now()


def ring_positions(db, no: int = 0) -> dict[str, int]:
    """Shard ``no``'s WAL ring positions: head (appended up to), written (written
    out), durable (fsynced), in ring bytes."""
    from fusedb.core.layout import R_DURABLE, R_WRITTEN, R_HEAD
    hdr = db._shards[no].ring.hdr
    return {"head": int(hdr[R_HEAD]), "written": int(hdr[R_WRITTEN]),
            "durable": int(hdr[R_DURABLE])}


def pause_wal_writer(db, no: int) -> None:
    """Embedded: stop shard ``no``'s WAL writer thread where it is (no last
    write-out): its ring's records stay unwritten until the handle is crashed."""
    f = db._store.wal_writers[no]
    f.stopping.set()
    f.kick.set()
    f.join()


def _stop_wal_writers(db) -> None:
    for f in db._store.wal_writers:        # stopped where they are: no last write-out
        f.stopping.set()
        f.kick.set()
        f.join()


def _stop_workers(db, join: bool = True) -> None:
    for w in db._store.workers:
        w.stopping.set()
        w.wakeup.set()
        if join:
            w.join()


def _drop_handle(db, keep_shm: bool) -> None:
    store = db._store
    store.workers = []
    for f in store.wal_writers:
        os.close(f.fd)
        f.fd = -1
    store.wal_writers = []
    # keep_shm: leave the objects in /dev/shm, as a dead process does
    store.release_shm(unlink=not keep_shm)
    store.lockfile.release()
    db._closed = True


def crash(db) -> None:
    """Simulate the process dying with embedded ``db`` open: stop its threads and
    unmap its shared memory but unlink nothing and write nothing (as SIGKILL)."""
    _stop_workers(db)
    _stop_wal_writers(db)
    _drop_handle(db, keep_shm=True)


def power_cut(db, sim, undo, hold=None) -> None:
    """Lose power under embedded ``db`` (``sim``/``undo`` from tests/powerloss.py's
    ``install``): the disk reverts to its last fsyncs and shared memory is gone.
    ``hold`` (a threading.Event) releases a worker frozen in a failpoint."""
    _stop_wal_writers(db)
    _stop_workers(db, join=False)       # workers not frozen in a failpoint stop now
    sim.power_loss()                    # the disk as it was at the last fsyncs
    if hold is not None:
        hold.set()                      # a frozen worker raises and ends
    _stop_workers(db)                   # a worker still merging hits PowerLost
    undo()                              # only now: the workers no longer use the disk
    _drop_handle(db, keep_shm=False)    # RAM is gone: shared memory too


#: The private internals this module reaches, for whoever moves them.
INTERNALS = """
FuseDB._store, ._shards, ._routes, ._closed;
the role object (runtime.state.Runtime and its subclasses EmbeddedStore,
ClientStore): .opts, .meta, .meta_lock, .manifest_lock, .segcache, .replayed,
.workers, .mergers, .wal_writers, .segments (.open_segments(), .forget()),
.release_shm(), .lockfile.release();
runtime.identity._canonical (+ its xxhash); api.scan.prefix_end;
Shard.lock, .ring (.hdr); Merger.merge_leaf(); the lock objects lock_of() returns, as tests
call them: .acquire(), .holder(), .needs_repair(), .owner_died();
RouteCache.route(), .current(); Meta.routes(), .route_snapshot(), .segs_of(), .shard,
.writes, .hdr, .worker_slots(), .shard_faults(), .max_key; core.layout M_NEXT_LEAF,
M_ROUTE_VER, W_REPAIRS, R_HEAD, R_WRITTEN, R_DURABLE; core.retry.shard_state; merge worker .stop(),
.stopping, .wakeup; WAL writer .stopping, .kick, .fd, .sync_now();
and in testing/leaks.py: shm.region.tag_for.
"""
