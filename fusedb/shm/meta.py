"""The meta block: routing table, leaf table, locks and counters, in shared memory.

Layout (docs/format.md, "Meta block"; the numbers: fusedb.core.layout, whose
meta_arrays() gives the arrays in order); ML = max_leaves, MK = max_key_size,
S = shards::

    header     u64[32]      [0] magic "FUSEMET2", [1] layout version, [2] route version
                            (a seqlock: odd while the table changes), [3] current
                            routing copy (0 or 1), [4] ML, [5] MK, [6] S, [7] next leaf
                            id, [8] next segment id, [9] state (0 open, 1 closed),
                            [10] mode (0 embedded, 1 multiprocess), [11] router pid,
                            [12] length of the options JSON, [13] leaves in copy 0,
                            [14] leaves in copy 1, [15] pid of the ``fusedb serve``
                            daemon owning the database (0: a plain open()), [16]
                            attaches not listed in ``clients`` (registry full)
    stats      u64[S*8]     per shard: merges, splits, segment bytes written, segment
                            files written, write stalls, buffer freezes, logical bytes,
                            WAL disk error (1 while the WAL writer fails)
    locks      u8[(S+2)*64] one 64-byte slot per lock (shard locks 0..S-1, meta lock S,
                            manifest lock S+1): a robust process-shared pthread mutex
                            (bytes 0..47), the repair flag (u32 at 48) and the thread id
                            of the holder whose death set it (u32 at 52); read as u32
                            words (fusedb.shm.locks)
    workers    u64[S*4]     per shard: worker pid, flush requests, flushes done, repairs
    faults     u64[S*8]     per shard: current error of the merge worker, of the WAL
                            WAL writer (errno << 8 | step code, 0 healthy), last error of
                            either, failed attempts of each (fusedb/core/retry.py)
    options    u8[4096]     the router's options as JSON (attached processes use them)
    two routing copies, each sorted by lower bound:
      bound_len u32[ML], route_leaf u32[ML], bounds u8[ML*MK] (entry 0's bound is empty)
    leaf table, indexed by leaf id:
      shard u32[ML], active i32[ML] (slab or -1), frozen i32[ML] (slab or -1),
      nsegs u32[ML], segs u64[ML*4] (newest first), seq u64[ML] (last seqno used),
      fills u32[ML] (buffers frozen so far), writes u64[ML] (mutations so far),
      mseq u64[ML] (highest seqno held by the leaf's segments)
    clients    u64[256*3]   client registry, per slot: pid (0 free), attach time (unix
                            microseconds), the process's start time (clock ticks
                            since boot, /proc/PID/stat field 22: pid + start time
                            name one process even once the pid is reused)

Who writes what: a leaf's table entry under its shard's lock; the routing table
and the id counters under the meta lock (and, for a split, the lock of the shard
whose leaf splits). A routing change is written into the copy not in use, then
made current by one store to header[3], so a process killed mid-change leaves the
current copy intact. Readers copy the current table under the seqlock (no lock).

The client registry (one slot per attached ``ClientStore`` handle; the router
and the workers take none): a slot is taken (:meth:`Meta.register_client`) and
read (:meth:`Meta.live_clients`) under the meta lock; a slot whose process is
gone is free again, so a client killed by SIGKILL costs nothing. Its owner
frees it (:meth:`Meta.unregister_client`) with one store and no lock: while
the owner lives nobody else writes its slot.

Per-shard words are reached through views (:meth:`Meta.shard_stats`,
:meth:`Meta.worker_slots`, :meth:`Meta.shard_faults`), never by ``no * stride + i``.
"""

from __future__ import annotations

import ctypes
import json

from fusedb.core import failpoints
from fusedb.core.layout import (C_PID, C_SINCE, C_START, C_WORDS, CLIENT_SLOTS, F_WORDS,
                                LOCK_BYTES, LOCK_EXTRA, M_COUNT0, M_MAGIC, M_MAX_KEY,
                                M_MAX_LEAVES, M_OPTS_LEN, M_ROUTE_CUR, M_ROUTE_VER, M_SHARDS,
                                M_STATE, M_UNLISTED, MAX_SEGS, META_HDR_WORDS, META_MAGIC,
                                META_VERSION, OPTS_BYTES, S_WORDS, STATE_CLOSED, STATE_OPEN,
                                W_WORDS, meta_arrays, meta_region_bytes, shard_words)
# Names other modules import from here (the numbers live in fusedb.core.layout).
from fusedb.core.layout import (M_MODE, M_NEXT_LEAF, M_NEXT_SEG, M_ROUTER_PID,  # noqa: F401
                                M_SERVE_PID, M_VERSION, MODE_EMBEDDED, MODE_MULTIPROCESS,
                                S_DISK_ERROR, S_FREEZES, S_LOGICAL, S_MERGES, S_SEG_BYTES,
                                S_SEG_FILES, S_SPLITS, S_STALLS, STAT_FIELDS, W_FLUSH_DONE,
                                W_FLUSH_REQ, W_PID, W_REPAIRS)
from fusedb.errors import ClosedError, FuseDBError
from fusedb.shm.region import Region

MAGIC = META_MAGIC
LAYOUT_VERSION = META_VERSION
region_bytes = meta_region_bytes


class Meta:
    """Views of the meta block, one object per attached process (created by the
    router or embedded process, attached by workers and clients), used from any
    of its threads. Each field has its lock (module doc: "Who writes what"); the
    per-shard views are taken once and held by their users."""

    def __init__(self, nm: str, max_leaves: int = 0, max_key: int = 0, shards: int = 0,
                 create: bool = False):
        if create:
            self.region = Region(nm, region_bytes(max_leaves, max_key, shards))
        else:
            self.region = Region(nm)
        buf = self.region.buf
        hdr = buf[0:8 * META_HDR_WORDS].cast("Q")
        if create:
            hdr[M_MAGIC] = MAGIC
            hdr[M_VERSION] = LAYOUT_VERSION
            hdr[M_MAX_LEAVES] = max_leaves
            hdr[M_MAX_KEY] = max_key
            hdr[M_SHARDS] = shards
        elif hdr[M_MAGIC] != MAGIC or hdr[M_VERSION] != LAYOUT_VERSION:
            hdr.release()
            self.region.close()
            raise RuntimeError(f"shared memory {nm} is not a FuseDB meta block of this version")
        self.max_leaves = hdr[M_MAX_LEAVES]
        self.max_key = hdr[M_MAX_KEY]
        self.shards = hdr[M_SHARDS]
        hdr.release()
        off = 0
        self._views = []
        for field, size, fmt in meta_arrays(self.max_leaves, self.max_key, self.shards):
            if field == "locks":
                self._locks_off = off
                assert off % LOCK_BYTES == 0, "each lock slot is one cache line"
            v = buf[off:off + size].cast(fmt)
            setattr(self, field, v)
            self._views.append(v)
            off += (size + 7) & ~7
        self._copies = [(self.bound_len0, self.route_leaf0, self.bounds0),
                        (self.bound_len1, self.route_leaf1, self.bounds1)]
        self._routes_cache = None    # (version, bounds, leaf ids, leaf id -> position)
        # Each shard's part of the per-shard arrays, sliced once (a view held by the
        # caller costs nothing per operation; see shard_stats).
        n = self.shards
        self._shard_stats = [shard_words(self.stats, i, S_WORDS) for i in range(n)]
        self._worker_slots = [shard_words(self.workers, i, W_WORDS) for i in range(n)]
        self._shard_faults = [shard_words(self.faults, i, F_WORDS) for i in range(n)]
        self._views += self._shard_stats + self._worker_slots + self._shard_faults

    def close(self) -> None:
        self._copies = []
        for v in reversed(self._views):
            v.release()
        self.region.close()

    # -- per-shard words ----------------------------------------------------------------

    def shard_stats(self, no: int) -> memoryview:
        """Shard ``no``'s S_WORDS stats words (u64, indexed by fusedb.core.layout
        S_*), a view of the block: ``stats[S_LOGICAL] += n``. Written under the
        shard's lock (S_DISK_ERROR: by its WAL writer); read by stats() without.
        Take it once and keep it: the call is the cost, the view costs nothing."""
        return self._shard_stats[no]

    def worker_slots(self, no: int) -> memoryview:
        """Shard ``no``'s W_WORDS worker slots (u64, indexed by W_*), a view."""
        return self._worker_slots[no]

    def shard_faults(self, no: int) -> memoryview:
        """Shard ``no``'s F_WORDS background-error words (u64, indexed by F_*;
        fusedb.core.retry), a view."""
        return self._shard_faults[no]

    # -- locks -----------------------------------------------------------------------

    def lock_slot(self, j: int):
        """Lock slot j (shard locks 0..S-1, meta lock S, manifest lock S+1) as a
        ctypes ``c_char * LOCK_BYTES`` over the block, for fusedb.shm.locks. It
        keeps the mapping alive until dropped (ProcLock.close)."""
        assert 0 <= j < self.shards + LOCK_EXTRA
        return (ctypes.c_char * LOCK_BYTES).from_buffer(self.region.buf,
                                                        self._locks_off + j * LOCK_BYTES)

    def end_interrupted_change(self) -> None:
        """Run by the process that acquires the meta lock after its holder died
        inside its critical section. Every meta-lock section leaves the block
        whole at every instant but one: a routing change killed between its two
        seqlock increments (the current copy is intact: copies switch by one
        store; a client registration, which stores the pid last, is whole at
        every instant). That update is ended; otherwise the version moves on by 2, which
        only makes every process re-read the table (so a close_routing cut short
        between its two stores is seen too)."""
        hdr = self.hdr
        hdr[M_ROUTE_VER] += 1 if hdr[M_ROUTE_VER] & 1 else 2

    # -- options and state -----------------------------------------------------------

    def set_options(self, opts: dict) -> None:
        data = json.dumps(opts, sort_keys=True).encode()
        if len(data) > OPTS_BYTES:
            raise ValueError("options do not fit in the meta block")
        self.options[:len(data)] = data
        self.hdr[M_OPTS_LEN] = len(data)

    def get_options(self) -> dict:
        return json.loads(bytes(self.options[:self.hdr[M_OPTS_LEN]]))

    def close_routing(self) -> None:
        """Mark the database closed and change the route version, so every process
        re-reads the table after its next lock (and gets ClosedError). Caller holds
        the meta lock."""
        self.hdr[M_STATE] = STATE_CLOSED
        self.hdr[M_ROUTE_VER] += 2

    # -- client registry -------------------------------------------------------------

    def register_client(self, pid: int, since_us: int) -> int:
        """List process ``pid``, attached at unix time ``since_us`` (microseconds),
        in a free slot, or in one whose process is gone (pruned here); returns
        the slot, or -1 when all CLIENT_SLOTS are held by live processes: the
        attach stands, unlisted, and header slot M_UNLISTED counts it. Caller
        holds the meta lock. A free slot costs no system call; only a full
        table makes it look at the processes (one /proc read per slot)."""
        c = self.clients
        slot = next((i for i in range(CLIENT_SLOTS) if c[i * C_WORDS + C_PID] == 0), -1)
        if slot < 0:
            slot = next((i for i in range(CLIENT_SLOTS) if not self._slot_live(i)), -1)
        if slot < 0:
            self.hdr[M_UNLISTED] += 1
            return -1
        b = slot * C_WORDS
        c[b + C_SINCE] = since_us
        c[b + C_START] = process_start(pid) or 0
        c[b + C_PID] = pid       # last: the slot is taken from this store on
        return slot

    def unregister_client(self, slot: int, pid: int) -> None:
        """Free ``slot`` if it still lists ``pid`` (a slot of -1, or one pruned
        and retaken meanwhile, is left alone). Needs no lock: the slot's owner
        calls it while alive, and nobody else writes a live owner's slot (one
        8-byte store; registration and pruning skip it)."""
        if 0 <= slot < CLIENT_SLOTS and self.clients[slot * C_WORDS + C_PID] == pid:
            self.clients[slot * C_WORDS + C_PID] = 0

    def live_clients(self) -> list[tuple[int, float]]:
        """(pid, attach time in unix seconds) of each listed client still
        running, in slot order; the slots of processes that are gone are freed.
        Caller holds the meta lock. One /proc read per listed client."""
        c = self.clients
        out = []
        for i in range(CLIENT_SLOTS):
            b = i * C_WORDS
            if c[b + C_PID] == 0:
                continue
            if self._slot_live(i):
                out.append((c[b + C_PID], c[b + C_SINCE] / 1e6))
            else:
                c[b + C_PID] = 0
        return out

    def unlisted_clients(self) -> int:
        """Attaches since open that found every client slot taken (M_UNLISTED)."""
        return self.hdr[M_UNLISTED]

    def _slot_live(self, i: int) -> bool:
        """Whether slot ``i`` lists a running process: its pid runs (not a
        zombie) and started when the one registered did (else the pid was
        reused after the client died)."""
        b = i * C_WORDS
        pid = self.clients[b + C_PID]
        return pid != 0 and process_start(pid) == self.clients[b + C_START]

    # -- routing table ---------------------------------------------------------------

    def nleaves(self) -> int:
        """Entries in the current routing copy (stable under the meta lock)."""
        return self.hdr[M_COUNT0 + self.hdr[M_ROUTE_CUR]]

    def _entries(self, cur: int) -> tuple[list[bytes], list[int]]:
        blen, rleaf, bounds = self._copies[cur]
        mk = self.max_key
        n = self.hdr[M_COUNT0 + cur]
        return ([bytes(bounds[i * mk:i * mk + blen[i]]) for i in range(n)], list(rleaf[:n]))

    def route_snapshot(self) -> tuple[int, list[bytes], list[int]]:
        """(version, lower bounds, leaf ids) copied consistently under the seqlock.
        Raises ClosedError once the database is closed."""
        hdr = self.hdr
        while True:
            v1 = hdr[M_ROUTE_VER]
            if hdr[M_STATE] != STATE_OPEN:
                raise ClosedError("the database was closed: by close(), or its owner (a fusedb "
                                  "serve daemon, or the process that opened it) stopped or "
                                  "ended; once it runs again, attach a new handle with "
                                  "fusedb.connect(path)")
            if v1 & 1:
                continue
            bounds, leaves = self._entries(hdr[M_ROUTE_CUR])
            if hdr[M_ROUTE_VER] == v1:
                return v1, bounds, leaves

    def routes(self) -> tuple[list[bytes], list[int]]:
        """The current table (lists the caller must not modify); caller holds the
        meta lock (no seqlock needed). Copied out of shared memory once per route
        version, so a merge's look-up of its leaf's range is O(1), not O(leaves)."""
        ver = self.hdr[M_ROUTE_VER]
        c = self._routes_cache
        if c is None or c[0] != ver:
            bounds, leaves = self._entries(self.hdr[M_ROUTE_CUR])
            c = self._routes_cache = (ver, bounds, leaves,
                                      {leaf: i for i, leaf in enumerate(leaves)})
        return c[1], c[2]

    def bound_fits(self, bound: bytes) -> bool:
        """Whether ``bound`` fits a routing-table bound slot (``max_key`` bytes)."""
        return len(bound) <= self.max_key

    def route_write(self, entries: list[tuple[bytes, int]]) -> None:
        """Make ``entries`` (sorted (lower bound, leaf id)) the routing table: written
        into the unused copy, then switched to. Caller holds the meta lock.

        Raises FuseDBError, changing nothing, if a bound is longer than a slot
        (``max_key`` bytes): written, it would overrun the next entries' bounds.
        Callers never pass one (the slots are as wide as the longest key the
        database may hold, and a split never picks a bound that does not fit:
        :meth:`bound_fits`); this is the last line of defence."""
        hdr = self.hdr
        nxt = 1 - hdr[M_ROUTE_CUR]
        blen, rleaf, bounds = self._copies[nxt]
        mk = self.max_key
        for bound, _leaf in entries:
            if len(bound) > mk:
                raise FuseDBError(f"refusing a routing bound of {len(bound)} bytes: the "
                                  f"routing table's bound slots hold {mk} bytes")
        for i, (bound, leaf_id) in enumerate(entries):
            bounds[i * mk:i * mk + len(bound)] = bound
            blen[i] = len(bound)
            rleaf[i] = leaf_id
        hdr[M_COUNT0 + nxt] = len(entries)
        hdr[M_ROUTE_VER] += 1          # seqlock: odd while the current copy changes
        failpoints.hit("route.switch")
        hdr[M_ROUTE_CUR] = nxt
        hdr[M_ROUTE_VER] += 1

    def route_split(self, leaf_id: int, bound: bytes, right: int) -> None:
        """Insert ``right`` after ``leaf_id`` with lower bound ``bound``. Caller holds
        the meta lock."""
        bounds, leaves = self.routes()
        pos = leaves.index(leaf_id)
        entries = list(zip(bounds, leaves))
        entries.insert(pos + 1, (bound, right))
        self.route_write(entries)

    def leaf_range(self, leaf_id: int) -> tuple[bytes, bytes | None]:
        """[lo, hi) of a leaf; hi None for the last leaf. Caller holds the meta lock."""
        bounds, _leaves = self.routes()
        pos = self._routes_cache[3][leaf_id]
        return bounds[pos], (bounds[pos + 1] if pos + 1 < len(bounds) else None)

    # -- leaf table ------------------------------------------------------------------

    def copy_leaf_table(self, n: int) -> dict[str, memoryview]:
        """Copies of the leaf table's columns for leaf ids ``0 .. n-1`` (shard,
        active, frozen, nsegs, writes, fills: one value per leaf; segs: MAX_SEGS
        per leaf, of which the first nsegs count), as memoryviews of bytes
        copies (index or ``tolist()`` them). One copy per column, no Python work
        per leaf: for the merge loop's snapshot under the shard lock."""
        return {name: memoryview(getattr(self, name)[:n * (MAX_SEGS if name == "segs" else 1)]
                                 .tobytes()).cast(getattr(self, name).format)
                for name in ("shard", "active", "frozen", "nsegs", "writes", "fills", "segs")}

    def segs_of(self, leaf_id: int) -> list[int]:
        base = leaf_id * MAX_SEGS
        return list(self.segs[base:base + self.nsegs[leaf_id]])

    def set_segs(self, leaf_id: int, segids: list[int]) -> None:
        assert len(segids) <= MAX_SEGS
        base = leaf_id * MAX_SEGS
        for i, s in enumerate(segids):
            self.segs[base + i] = s
        self.nsegs[leaf_id] = len(segids)

    def init_leaf(self, leaf_id: int, shard: int, seq: int, segids: list[int]) -> None:
        self.shard[leaf_id] = shard
        self.active[leaf_id] = -1
        self.frozen[leaf_id] = -1
        self.seq[leaf_id] = seq
        self.fills[leaf_id] = 0
        self.writes[leaf_id] = 0
        self.mseq[leaf_id] = seq
        self.set_segs(leaf_id, segids)



def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (field 22 of
    /proc/PID/stat, proc(5)): with the pid, it names one process for as long
    as the system runs. None if there is no such process or it is a zombie.
    Read from /proc rather than psutil's create_time(), which adds the boot
    time in wall-clock seconds and so moves when the clock is set."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()    # from field 3, after "pid (comm) "
    return None if fields[0] == b"Z" else int(fields[19])
