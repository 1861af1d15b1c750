"""Test support: the one dict model of the API contract, a fake clock, small
options, and every helper that needs FuseDB's internals.

Tests never touch a private attribute of a handle (``db._store``, ``db._shards``,
...) nor a layout constant: they call a named function here. When the internals
move, this module is the one place to re-point (see ``INTERNALS`` at the end).

Nothing here is used by FuseDB itself; it is imported by tests (in the test
process and in the child processes tests start).
"""

from __future__ import annotations

import os
import re

from fusedb.errors import IntegerOverflowError, NotAnIntegerError, ValueTypeError

#: Small sizes so that a few hundred operations freeze buffers, merge and split.
TINY = dict(buffer_bytes=4096, buffer_slots=16, arena_bytes=4096 * 16, leaf_max_bytes=1500,
            max_key_size=32, max_value_size=200, hot_fills=3, min_split_entries=8,
            merge_tick=0.002, write_timeout=30.0)
#: Even smaller: four slots per buffer, so a buffer freezes after four distinct keys.
SMALL = dict(TINY, buffer_slots=4, leaf_max_bytes=400, min_split_entries=4, hot_fills=2)

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
TTL_NONE, TTL_MISSING = -1.0, -2.0


class FakeClock:
    """Injectable clock (``fusedb.open(path, clock=FakeClock())``): time moves only
    when a test advances it. Start it at or after the real time when worker
    processes run (they reclaim expired entries by the real clock)."""

    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


# -- the model ---------------------------------------------------------------------

_DECIMAL = re.compile(rb"-?[1-9][0-9]{0,19}|0")


def decimal(value: bytes) -> int | None:
    """The signed 64-bit int an ASCII decimal value spells (Redis INCR rules: no
    sign but '-', no leading zero, no spaces), else None."""
    if _DECIMAL.fullmatch(value) is None:
        return None
    n = int(value)
    return n if INT64_MIN <= n <= INT64_MAX else None


class Model:
    """The README contract as a dict: key -> (value bytes, expiry time or 0.0).

    Every method takes ``now`` (the database's clock) and behaves as the engine
    must: expired keys are invisible, a counter is stored as its ASCII decimal,
    ``incr`` keeps an existing TTL and counts an expired key as 0, a failing
    operation changes nothing and raises the engine's error class. Used by every
    state machine and random test; single-threaded."""

    def __init__(self, live: dict[bytes, bytes] | None = None):
        #: key -> (value, expiry time or 0.0); tuples, so a shallow copy is a copy.
        self.data: dict[bytes, tuple[bytes, float]] = {
            k: (v, 0.0) for k, v in (live or {}).items()}

    def copy(self) -> Model:
        m = Model()
        m.data = dict(self.data)
        return m

    @staticmethod
    def _exp(ttl, now: float) -> float:
        return 0.0 if ttl is None else now + ttl

    def _entry(self, k: bytes, now: float):
        e = self.data.get(k)
        if e is None or (e[1] and e[1] <= now):
            return None
        return e

    def live(self, now: float = 0.0) -> dict[bytes, bytes]:
        """Every live key and its value (``now`` is irrelevant without TTLs)."""
        return {k: v for k, (v, e) in self.data.items() if e == 0 or e > now}

    def put(self, k: bytes, v: bytes, ttl, now: float) -> None:
        self.data[k] = (bytes(v), self._exp(ttl, now))

    def get(self, k: bytes, now: float) -> bytes | None:
        e = self._entry(k, now)
        return None if e is None else e[0]

    def get_many(self, ks, now: float) -> list:
        return [self.get(k, now) for k in ks]

    def incr(self, k: bytes, delta: int, now: float) -> int:
        if delta < INT64_MIN or delta > INT64_MAX:
            raise IntegerOverflowError("delta")
        e = self._entry(k, now)
        base, exp = (0, 0.0) if e is None else (decimal(e[0]), e[1])
        if base is None:
            raise NotAnIntegerError(k)
        new = base + delta
        if not INT64_MIN <= new <= INT64_MAX:
            raise IntegerOverflowError(k)
        self.data[k] = (b"%d" % new, exp)
        return new

    def delete(self, k: bytes, now: float) -> bool:
        existed = self._entry(k, now) is not None
        self.data.pop(k, None)
        return existed

    def expire(self, k: bytes, ttl, now: float) -> bool:
        e = self._entry(k, now)
        if e is None:
            return False
        self.data[k] = (e[0], self._exp(ttl, now))
        return True

    def ttl(self, k: bytes, now: float) -> float:
        e = self._entry(k, now)
        if e is None:
            return TTL_MISSING
        return TTL_NONE if e[1] == 0 else e[1] - now

    def scan(self, now: float, start=None, stop=None, prefix=None, limit=None,
             reverse=False) -> list[tuple[bytes, bytes]]:
        out = sorted((k, v) for k, v in self.live(now).items()
                     if (prefix is None or k.startswith(prefix))
                     and (start is None or k >= start) and (stop is None or k < stop))
        if reverse:
            out.reverse()
        return out if limit is None else out[:limit]

    def batch(self, ops, now: float) -> list:
        """Apply ``ops`` ((name, key, arg, ttl) tuples: put arg=value, incr
        arg=delta, delete, expire ttl) all or nothing; one result per op."""
        trial = self.copy()
        results = []
        for name, k, arg, ttl in ops:
            if name == "put":
                results.append(trial.put(k, arg, ttl, now))
            elif name == "incr":
                results.append(trial.incr(k, arg, now))
            elif name == "delete":
                results.append(trial.delete(k, now))
            else:
                results.append(trial.expire(k, ttl, now))
        self.data = trial.data
        return results

    def update(self, k: bytes, fn, ttl, now: float):
        """``db.update``: fn(current value or None) -> new bytes or None (delete);
        ttl None keeps an existing TTL; returns what was stored."""
        e = self._entry(k, now)
        new = fn(None if e is None else e[0])
        if new is None:
            self.data.pop(k, None)
            return None
        if not isinstance(new, (bytes, bytearray, memoryview)):
            raise ValueTypeError(type(new).__name__)
        exp = (e[1] if e is not None else 0.0) if ttl is None else now + ttl
        self.data[k] = (bytes(new), exp)
        return bytes(new)


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with ``prefix`` (None: no bound),
    as ``scan(prefix=...)`` computes it."""
    from fusedb.api.scan import prefix_end as end
    return end(prefix)


def outcome(fn, *args, **kwargs):
    """("ok", result) or ("err", error class name): compares an engine call with
    the model's without caring where it ran."""
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - returned for comparison
        return "err", type(e).__name__


# -- leak checks (tests/conftest.py) ----------------------------------------------

SHM = "/dev/shm"


def fusedb_shm(base: str | None = None) -> set[str]:
    """FuseDB objects in /dev/shm; with ``base``, only those of databases in
    directories under ``base`` (so test runs in other directories, running at
    the same time, are not mistaken for leaks of this one)."""
    from fusedb.shm import region
    found = {e for e in os.listdir(SHM) if "fusedb-" in e}
    if base is None:
        return found
    tags = set()
    for root, _dirs, _files in os.walk(base):
        tags.add(region.tag_for(root))
    return {e for e in found if e.split("fusedb-", 1)[1].split("-", 1)[0] in tags}


def fusedb_threads() -> list:
    import threading
    return [t for t in threading.enumerate() if t.name.startswith("fusedb-")]


def fusedb_processes(base: str) -> list:
    """Live FuseDB worker processes of databases under ``base`` (orphaned ones
    included), and children of this process (psutil.Process objects)."""
    import psutil
    found = []
    me = psutil.Process()
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = p.info["cmdline"] or []
            if "fusedb.worker.process" in cmd and any(a.startswith(base) for a in cmd):
                found.append(p)
        except psutil.Error:
            pass
    for c in me.children(recursive=True):
        try:
            # multiprocessing's helper lives as long as this process, by design.
            if "multiprocessing.resource_tracker" in " ".join(c.cmdline()):
                continue
            if c.status() != psutil.STATUS_ZOMBIE and c not in found:
                found.append(c)
        except psutil.Error:
            pass
    return found


def assert_no_leaks(base: str, shm_before: set[str], wait: float = 10.0) -> None:
    """Fail if FuseDB processes (of databases under ``base``, or children of this
    process), shared-memory objects not in ``shm_before``, or FuseDB threads are
    left; processes get ``wait`` seconds to finish exiting and are then killed."""
    import time
    deadline = time.monotonic() + wait
    while fusedb_processes(base) and time.monotonic() < deadline:
        time.sleep(0.05)
    procs = fusedb_processes(base)
    for p in procs:
        p.kill()
    leaked = fusedb_shm(base) - shm_before
    threads = fusedb_threads()
    assert not procs, f"test left processes running: {procs}"
    assert not leaked, f"test leaked shared-memory objects: {sorted(leaked)}"
    assert not threads, f"test left FuseDB threads running: {threads}"


# -- helpers that reach internals (re-point these when the internals move) -------------

def options(db):
    """The handle's resolved :class:`fusedb.Options` (in a client: the router's)."""
    return db._store.opts


def mode_role(db) -> str:
    """"embedded", "router" or "client"."""
    return db._store.role


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


def leaf_count(db) -> int:
    return len(db._routes.current()[2])


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
    return db._store.open_segments([segid])[0]


def writes_per_shard(db) -> list[int]:
    """Writes counted per shard (the scheduler's per-leaf write counters, summed)."""
    meta = db._store.meta
    out = [0] * len(db._shards)
    for leaf in db._routes.current()[2]:
        out[meta.shard[leaf]] += meta.writes[leaf]
    return out


def next_leaf_id(db) -> int:
    """The leaf-id counter (the next leaf a split would take)."""
    from fusedb.shm.meta import M_NEXT_LEAF
    return int(db._store.meta.hdr[M_NEXT_LEAF])


def max_key_slot(db) -> int:
    """Bytes the shared routing table reserves per leaf bound."""
    return db._store.meta.max_key


def routing_changing(db) -> bool:
    """Whether the routing table's version is odd (a copy being switched)."""
    from fusedb.shm.meta import M_ROUTE_VER
    return bool(db._store.meta.hdr[M_ROUTE_VER] % 2)


def repairs(db, no: int) -> int:
    """Times shard ``no``'s worker rebuilt the shard (a lock holder died)."""
    from fusedb.shm.meta import W_REPAIRS
    return int(db._store.meta.workers[no * 4 + W_REPAIRS])


def background_state(db, no: int) -> dict:
    """Shard ``no``'s background I/O state (as ``stats()["workers"]``, without psutil)."""
    from fusedb.core.retry import shard_state
    return shard_state(db._store.meta.faults, no)


def stop_worker(db, no: int = 0) -> None:
    """Embedded: stop shard ``no``'s merge thread, so the test merges by hand."""
    db._store.workers[no].stop()


def merge_leaf(db, leaf: int, full: bool = False, split: bool = False):
    """Merge ``leaf`` now in this thread (its worker must be stopped)."""
    shard = db._shards[shard_of_leaf(db, leaf)]
    return shard.merge_leaf(leaf, full=full, split=split)


def forget_segment(db, segid: int) -> None:
    """Drop segment ``segid`` from this process's segment cache (as a process that
    never opened it)."""
    db._store.forget_segments([segid])


def identity_checksum(body: dict) -> str:
    """The checksum the identity file ``FUSEDB`` carries for document ``body``
    (without its "checksum" field)."""
    from fusedb.runtime import identity
    return identity.xxhash.xxh3_64_hexdigest(identity._canonical(body))


def write_out_wal(db, no: int = 0) -> None:
    """Embedded: have shard ``no``'s WAL writer write the ring out and fsync now."""
    db._store.flushers[no].sync_now()


def ring(db, no: int = 0):
    """Shard ``no``'s WAL ring (:class:`fusedb.wal.ring.Ring`)."""
    return db._shards[no].ring


def ring_positions(db, no: int = 0) -> dict[str, int]:
    """Shard ``no``'s WAL ring positions: head (appended up to), flushed (written
    out), durable (fsynced), in ring bytes."""
    from fusedb.wal.ring import R_DURABLE, R_FLUSHED, R_HEAD
    hdr = db._shards[no].ring.hdr
    return {"head": int(hdr[R_HEAD]), "flushed": int(hdr[R_FLUSHED]),
            "durable": int(hdr[R_DURABLE])}


def _stop_flushers(db) -> None:
    for f in db._store.flushers:        # stopped where they are: no last write-out
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
    for f in store.flushers:
        os.close(f.fd)
        f.fd = -1
    store.flushers = []
    if keep_shm:
        store._unlink = []               # leave the objects in /dev/shm, as a dead process does
    store._release_shm()
    db._closed = True


def crash(db) -> None:
    """Simulate the process dying with embedded ``db`` open: stop its threads and
    unmap its shared memory but unlink nothing and write nothing (as SIGKILL)."""
    _stop_workers(db)
    _stop_flushers(db)
    _drop_handle(db, keep_shm=True)


def power_cut(db, sim, undo, hold=None) -> None:
    """Lose power under embedded ``db`` (``sim``/``undo`` from tests/powerloss.py's
    ``install``): the disk reverts to its last fsyncs and shared memory is gone.
    ``hold`` (a threading.Event) releases a worker frozen in a failpoint."""
    _stop_flushers(db)
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
Store.opts, .role, .meta, .meta_lock, .manifest_lock, .segcache, .replayed, .workers,
.flushers, .open_segments(), .forget_segments(), ._unlink, ._release_shm();
runtime.identity._canonical (+ its xxhash); api.scan.prefix_end;
Shard.lock (.holder(), .needs_repair()), .ring (.hdr), .merge_leaf();
RouteCache.route(), .current(); Meta.routes(), .route_snapshot(), .segs_of(), .shard,
.writes, .hdr, .workers, .faults, .max_key; meta.M_NEXT_LEAF, M_ROUTE_VER, W_REPAIRS;
ring.R_HEAD, R_FLUSHED, R_DURABLE; core.retry.shard_state; merge worker .stop(),
.stopping, .wakeup; WAL writer .stopping, .kick, .fd, .sync_now().
"""
