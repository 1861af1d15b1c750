# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled kernel: ``put``, ``get`` and ``incr`` in one call each, over the
same shared memory and files as the pure-Python path, byte for byte.

What one call does (docs/design.md, "The compiled kernel"): route the key with
the cached routing table, take the shard lock (a robust pthread mutex, trylock
from C; embedded: the ``threading.Lock``), recheck the routing version, then

* put: probe the leaf's active buffer, append the WAL record to the shard's
  ring (xxh3 checksum), update the slot in place or insert it;
* incr: the in-buffer merge of a live counter in the active buffer;
* get: probe the active and frozen buffers; on a miss, take the leaf's open
  segments and probe them (hash buckets of the mmapped file) after the lock.

Everything else is the pure-Python path's (fusedb.api.executor), called from
here *before anything is written*: no active buffer, a full one, a ring that
wraps or has no room, a contended or dead-holder lock (ProcLock._contended),
the route moving, a segment not open yet, a counter not in the active buffer.
The pure path then runs the operation from scratch, so every rule stays in one
place: WAL first, the stall and retry loop, lock repair, signals (no Python
code runs between acquiring and releasing a lock here, so no handler can
interrupt a critical section).

Every number comes from fusedb.core.layout at construction: this file repeats
no offset. Mirrors fusedb.shard.shard.Shard.write_locked / incr_in_place_locked
/ read_buffers_locked, fusedb.shm.slab.Slab.find / insert / update / fits and
fusedb.wal.ring.Ring.append; tests/test_kernel.py drives both paths with the
same random operations and compares every byte of shared memory.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.set cimport PySet_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport free, malloc
from libc.errno cimport EBUSY
from libc.string cimport memcmp, memcpy, memset

from fusedb.core import layout as L
from fusedb.core.entry import KIND_DEL as _KIND_DEL, KIND_INT as _KIND_INT, \
    KIND_VALUE as _KIND_VALUE


cdef extern from "xxhash.h" nogil:
    ctypedef unsigned long long XXH64_hash_t
    XXH64_hash_t XXH3_64bits(const void* data, size_t length)

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_trylock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)

cdef extern from *:
    """
    #include <errno.h>
    #include <pthread.h>
    static inline int fusedb_add_overflow(long long a, long long b, long long *out) {
        return __builtin_add_overflow(a, b, out);
    }
    /* A store other processes read without the lock (the ring's head, which the
       WAL writer reads): ordered after every store before it, on any CPU. */
    static inline void fusedb_store_release(unsigned long long *p, unsigned long long v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    /* A lock held by another process for a few hundred nanoseconds (an
       operation) is cheaper to wait for here than by sleeping on the futex:
       watch the futex word (glibc's __lock: 0 when free) with a CPU pause,
       try again when it reads free; give up after `spins` pauses (a few
       microseconds) and return EBUSY. (musl keeps its lock word elsewhere in
       the mutex: there the spin never sees it free and only costs its pauses.) */
    static inline int fusedb_spin_trylock(pthread_mutex_t *m, unsigned int spins) {
        unsigned int i;
        for (i = 0; i < spins; i++) {
    #if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
    #elif defined(__aarch64__)
            __asm__ __volatile__("yield");
    #endif
            if (__atomic_load_n((unsigned int *)m, __ATOMIC_RELAXED) == 0) {
                int r = pthread_mutex_trylock(m);
                if (r != EBUSY)
                    return r;
            }
        }
        return EBUSY;
    }
    """
    int fusedb_add_overflow(long long a, long long b, long long* out) nogil
    void fusedb_store_release(unsigned long long* p, unsigned long long v) nogil
    int fusedb_spin_trylock(pthread_mutex_t* m, unsigned int spins) nogil


# Header slots and kinds, from fusedb.core.layout / fusedb.core.entry (module
# globals: one load each, no number repeated here).
cdef Py_ssize_t M_ROUTE_VER = L.M_ROUTE_VER
cdef Py_ssize_t H_USED = L.H_USED, H_HEAP = L.H_HEAP
cdef Py_ssize_t H_FIRST_LO = L.H_FIRST_LO, H_FIRST_HI = L.H_FIRST_HI
cdef Py_ssize_t R_HEAD = L.R_HEAD, R_LSN = L.R_LSN, R_ROOM = L.R_ROOM
cdef Py_ssize_t S_LOGICAL = L.S_LOGICAL
cdef Py_ssize_t L_REPAIR = L.L_REPAIR, LOCK_BYTES = L.LOCK_BYTES
cdef Py_ssize_t MAX_SEGS = L.MAX_SEGS, S_WORDS = L.S_WORDS
cdef uint32_t T_MUTATIONS = L.T_MUTATIONS
cdef uint8_t KIND_VALUE = _KIND_VALUE, KIND_INT = _KIND_INT, KIND_DEL = _KIND_DEL
cdef uint32_t NOT_FOUND = 0xFFFFFFFF
#: CPU pauses a contended shard lock is watched for before the waiting of
#: ProcLock._contended (futex sleep, timeouts, repair): ~2-10 us.
cdef unsigned int SPINS = 256

# The single-mutation WAL record (layout.WAL_RECORD_HEADER + WAL_ONE_MUTATION):
# checksum u64 | length u32 | type u32 | lsn u64 | count u32 | 0 u32 |
# seq u64 | exp f64 | kind u8 | 0 u8 | klen u16 | vlen u32 | key value pad8.
import struct as _struct
assert _struct.calcsize(L.WAL_RECORD_HEADER) == 16
assert _struct.calcsize(L.WAL_ONE_MUTATION) == 40 and L.WAL_RECORD_ALIGN == 16
assert L.WAL_ONE_MUTATION == "<QIIQdBBHI"


cdef struct Slabs:
    char* base          # slab 0
    uint64_t slab_bytes
    uint32_t nslots
    uint32_t mask       # index positions - 1
    uint64_t index_off, hash_off, seq_off, exp_off, koff_off, klen_off, voff_off
    uint64_t vlen_off, vcap_off, kind_off, heap_off, heap_bytes


cdef struct ShardC:
    uint64_t* ring_hdr
    char* ring_data
    uint64_t ring_cap
    Slabs slabs
    uint64_t* stats
    pthread_mutex_t* mutex      # NULL: the lock is taken through its Python methods
    uint32_t* repair_flag


cdef inline uint32_t* u32(char* p, uint64_t off) noexcept nogil:
    return <uint32_t*>(p + off)


cdef class KSegment:
    """Pointers into one open segment file's mapping (fusedb.core.segment:
    hash buckets, order, keys, values). Made by :meth:`Kernel.get` the first
    time it probes the segment, kept as the Segment's ``kview`` (dropped by
    ``Segment.close`` before the file is unmapped); holds a buffer of the
    mapping while it lives."""

    cdef Py_buffer view
    cdef bint held
    cdef uint64_t* hash
    cdef double* exp
    cdef uint64_t* voff
    cdef uint32_t* koff
    cdef uint8_t* kind
    cdef uint32_t* buckets
    cdef uint32_t* order
    cdef char* keys
    cdef char* vals
    cdef int shift

    def __cinit__(self, seg):
        PyObject_GetBuffer(seg._mm_view, &self.view, PyBUF_SIMPLE)
        self.held = True
        cdef char* b = <char*>self.view.buf
        off = seg._off
        self.hash = <uint64_t*>(b + <uint64_t>off["hash"])
        self.exp = <double*>(b + <uint64_t>off["exp"])
        self.voff = <uint64_t*>(b + <uint64_t>off["voff"])
        self.koff = <uint32_t*>(b + <uint64_t>off["koff"])
        self.kind = <uint8_t*>(b + <uint64_t>off["kind"])
        self.buckets = <uint32_t*>(b + <uint64_t>off["buckets"])
        self.order = <uint32_t*>(b + <uint64_t>off["order"])
        self.keys = b + <uint64_t>off["keys"]
        self.vals = b + <uint64_t>off["vals"]
        self.shift = seg.shift

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)

    cdef int64_t find(self, const char* key, Py_ssize_t klen, uint64_t h):
        """Entry number of ``key`` or -1 (Segment.find)."""
        cdef uint64_t b = h >> self.shift if self.shift < 64 else 0
        cdef uint32_t i = self.buckets[b], e = self.buckets[b + 1], j, a
        while i < e:
            j = self.order[i]
            if self.hash[j] == h:
                a = self.koff[j]
                if self.koff[j + 1] - a == klen and memcmp(self.keys + a, key, klen) == 0:
                    return j
            i += 1
        return -1


cdef class Kernel:
    """The compiled per-operation path of one open database in this process:
    one per Executor (fusedb.api.executor), used by every thread of the
    process with no lock of its own (the shard locks order everything; the
    routing copy is replaced whole under the GIL).

    ``x``: the Executor, whose pure-Python ``put``, ``get_value`` and ``incr``
    take every case this does not. Holds buffers of the meta block, the rings
    and the arenas until :meth:`release` (the runtime calls it before
    unmapping); after that every call goes to the pure path (which raises
    ClosedError)."""

    cdef object routes, segcache, clock, fn_threads
    cdef list locks, writers, acquires, releases
    cdef Py_buffer* bufs
    cdef int nbufs
    cdef int nshards
    cdef ShardC* shards
    cdef uint64_t* hdr
    cdef uint32_t* leaf_shard
    cdef int32_t* active
    cdef int32_t* frozen
    cdef uint32_t* nsegs
    cdef uint64_t* segs
    cdef uint64_t* seq
    cdef uint64_t* writes
    cdef bint sync, open
    # the routing copy: version, bounds (list of bytes), leaf ids
    cdef uint64_t route_ver
    cdef list bounds
    cdef uint32_t* route_leaf
    cdef public object fb_put, fb_get, fb_incr, fb_modify

    def __cinit__(self):
        self.bufs = NULL
        self.shards = NULL
        self.route_leaf = NULL
        self.nbufs = 0
        self.open = False

    def __init__(self, x):
        store = x.store
        self.fb_put = x.put
        self.fb_get = x.get_value
        self.fb_incr = x.incr
        self.fb_modify = x.modify
        meta = store.meta
        self.routes = x.routes
        self.segcache = store.segcache
        self.clock = x.clock
        self.fn_threads = x.fn_threads
        self.sync = x.sync
        shards = store.shards
        self.nshards = len(shards)
        self.bufs = <Py_buffer*>malloc(sizeof(Py_buffer) * (1 + 2 * self.nshards))
        self.shards = <ShardC*>malloc(sizeof(ShardC) * self.nshards)
        if self.bufs == NULL or self.shards == NULL:
            raise MemoryError()
        cdef char* mb = self._buffer(meta.region.buf)
        offs = L.meta_offsets(meta.max_leaves, meta.max_key, meta.shards)
        self.hdr = <uint64_t*>(mb + <uint64_t>offs["hdr"])
        self.leaf_shard = <uint32_t*>(mb + <uint64_t>offs["shard"])
        self.active = <int32_t*>(mb + <uint64_t>offs["active"])
        self.frozen = <int32_t*>(mb + <uint64_t>offs["frozen"])
        self.nsegs = <uint32_t*>(mb + <uint64_t>offs["nsegs"])
        self.segs = <uint64_t*>(mb + <uint64_t>offs["segs"])
        self.seq = <uint64_t*>(mb + <uint64_t>offs["seq"])
        self.writes = <uint64_t*>(mb + <uint64_t>offs["writes"])
        cdef uint64_t* stats = <uint64_t*>(mb + <uint64_t>offs["stats"])
        cdef char* locks = mb + <uint64_t>offs["locks"]
        self.locks = []
        self.acquires = []      # bound methods, for the locks taken through Python
        self.releases = []
        self.writers = []
        cdef ShardC* sc
        for i, shard in enumerate(shards):
            sc = &self.shards[i]
            ring = shard.ring
            rb = self._buffer(ring.region.buf)
            sc.ring_hdr = <uint64_t*>rb
            sc.ring_data = rb + <uint64_t>L.RING_DATA_OFF
            sc.ring_cap = ring.cap
            arena = shard.arena
            ab = self._buffer(arena.region.buf)
            lay = arena.layout
            sc.slabs.base = ab + <uint64_t>L.arena_data_off(arena.nslabs)
            sc.slabs.slab_bytes = lay.slab_bytes
            sc.slabs.nslots = lay.nslots
            sc.slabs.mask = lay.cap - 1
            sc.slabs.index_off = lay.index_off
            cols = {name: off for name, (off, _fmt) in lay.cols.items()}
            sc.slabs.hash_off = cols["hash"]
            sc.slabs.seq_off = cols["seq"]
            sc.slabs.exp_off = cols["exp"]
            sc.slabs.koff_off = cols["koff"]
            sc.slabs.klen_off = cols["klen"]
            sc.slabs.voff_off = cols["voff"]
            sc.slabs.vlen_off = cols["vlen"]
            sc.slabs.vcap_off = cols["vcap"]
            sc.slabs.kind_off = cols["kind"]
            sc.slabs.heap_off = lay.heap_off
            sc.slabs.heap_bytes = lay.heap_bytes
            sc.stats = stats + <Py_ssize_t>i * S_WORDS
            lock = shard.lock
            index = getattr(lock, "index", None)
            if index is not None and not lock.hooked:
                sc.mutex = <pthread_mutex_t*>(locks + <uint64_t>index * LOCK_BYTES)
                sc.repair_flag = <uint32_t*>(locks + <uint64_t>index * LOCK_BYTES) + L_REPAIR
            else:
                sc.mutex = NULL
                sc.repair_flag = NULL
            self.locks.append(lock)
            self.acquires.append(lock.acquire)
            self.releases.append(lock.release)
            self.writers.append(shard.wal_writer)
        self.route_ver = <uint64_t>-1
        self.bounds = []
        self.open = True

    cdef char* _buffer(self, obj) except NULL:
        PyObject_GetBuffer(obj, &self.bufs[self.nbufs], PyBUF_WRITABLE)
        self.nbufs += 1
        return <char*>self.bufs[self.nbufs - 1].buf

    def release(self):
        """Let go of the shared memory (before the runtime unmaps it): later
        calls take the pure-Python path. Idempotent."""
        self.open = False
        cdef int i
        for i in range(self.nbufs):
            PyBuffer_Release(&self.bufs[i])
        self.nbufs = 0

    def __dealloc__(self):
        cdef int i
        for i in range(self.nbufs):
            PyBuffer_Release(&self.bufs[i])
        free(self.bufs)
        free(self.shards)
        free(self.route_leaf)

    # -- routing and locks ---------------------------------------------------------

    cdef int _refresh_routes(self) except -1:
        ver, bounds, leaves = self.routes.current()
        cdef Py_ssize_t n = len(leaves), i
        cdef uint32_t* arr = <uint32_t*>malloc(sizeof(uint32_t) * (n if n else 1))
        if arr == NULL:
            raise MemoryError()
        for i in range(n):
            arr[i] = leaves[i]
        free(self.route_leaf)
        self.route_leaf = arr
        self.bounds = bounds
        self.route_ver = ver
        return 0

    cdef inline int64_t _route(self, const char* key, Py_ssize_t klen, uint64_t* ver) except -2:
        """Leaf id of ``key`` (the version it was routed under in ``ver``)."""
        if self.hdr[M_ROUTE_VER] != self.route_ver:
            self._refresh_routes()
        cdef list bounds = self.bounds
        cdef Py_ssize_t lo = 0, hi = PyList_GET_SIZE(bounds), mid, blen, n
        cdef object b
        cdef int c
        while lo < hi:         # bisect_right(bounds, key)
            mid = (lo + hi) >> 1
            b = <object>PyList_GET_ITEM(bounds, mid)
            blen = PyBytes_GET_SIZE(b)
            n = klen if klen < blen else blen
            c = memcmp(key, PyBytes_AS_STRING(b), n)
            if c < 0 or (c == 0 and klen < blen):
                hi = mid
            else:
                lo = mid + 1
        ver[0] = self.route_ver
        return self.route_leaf[lo - 1]

    cdef inline int _lock(self, int no) except -1:
        cdef ShardC* sc = &self.shards[no]
        cdef int r
        if sc.mutex != NULL:
            r = pthread_mutex_trylock(sc.mutex)
            if r == EBUSY:
                r = fusedb_spin_trylock(sc.mutex, SPINS)
            if r != 0 or sc.repair_flag[0]:
                self.locks[no]._contended(r)     # waits, repairs, or raises
        else:
            (<object>PyList_GET_ITEM(self.acquires, no))()
        return 0

    cdef inline int _unlock(self, int no) except -1:
        cdef ShardC* sc = &self.shards[no]
        if sc.mutex != NULL:
            if pthread_mutex_unlock(sc.mutex) != 0:
                self.locks[no]._not_held()
        else:
            (<object>PyList_GET_ITEM(self.releases, no))()
        return 0

    # -- the operations ------------------------------------------------------------

    def put(self, bytes key, bytes value, double exp):
        """Store ``value`` under ``key`` (both validated by the caller), expiring
        at ``exp`` (absolute seconds, 0.0: never). Executor.put's contract."""
        if not self.open or PySet_GET_SIZE(self.fn_threads):
            return self.fb_put(key, value, exp)
        cdef const char* k = PyBytes_AS_STRING(key)
        cdef Py_ssize_t klen = PyBytes_GET_SIZE(key), vlen = PyBytes_GET_SIZE(value)
        cdef uint64_t h = XXH3_64bits(k, klen), ver
        cdef int64_t leaf = self._route(k, klen, &ver)
        cdef int no = self.leaf_shard[leaf]
        cdef ShardC* sc = &self.shards[no]
        cdef int64_t end = -1
        self._lock(no)
        try:        # (only C runs in here today; the finally keeps it safe if that changes)
            if self.hdr[M_ROUTE_VER] == ver:
                end = self._write_locked(sc, leaf, k, klen, h, KIND_VALUE,
                                         PyBytes_AS_STRING(value), vlen, 0, exp)
                if end >= 0:
                    sc.stats[S_LOGICAL] += klen + vlen
        finally:
            self._unlock(no)
        if end < 0:
            return self.fb_put(key, value, exp)
        if self.sync:
            self.writers[no].wait_durable(end)

    def incr(self, bytes key, long long delta, double now, double exp_new=0.0, bint xx=False):
        """Add ``delta`` to the counter at ``key``; the new value; a key this
        creates expires at ``exp_new``; with ``xx`` none is created
        (Executor.incr's contract; ``xx`` takes only the in-buffer merge here). Here: the in-buffer merge of a live counter in the active
        buffer, else the read-modify-write of a counter or a missing key (read
        from the buffers or the open segments, written to the active buffer);
        a decimal value to parse, an overflow (the pure path raises) and
        anything else go to the pure path."""
        if not self.open or PySet_GET_SIZE(self.fn_threads):
            return self.fb_incr(key, delta, now, exp_new, xx)
        cdef const char* k = PyBytes_AS_STRING(key)
        cdef Py_ssize_t klen = PyBytes_GET_SIZE(key)
        cdef uint64_t h = XXH3_64bits(k, klen), ver
        cdef int64_t leaf = self._route(k, klen, &ver)
        cdef int no = self.leaf_shard[leaf]
        cdef ShardC* sc = &self.shards[no]
        cdef int64_t end = -1
        cdef long long new = 0
        self._lock(no)
        try:
            if self.hdr[M_ROUTE_VER] == ver:
                end = self._incr_locked(sc, leaf, k, klen, h, delta, now, &new)
                if end < 0 and not xx:
                    end = self._rmw_incr_locked(sc, leaf, k, klen, h, delta, now, exp_new,
                                                 &new)
                if end >= 0:
                    sc.stats[S_LOGICAL] += klen + 8
        finally:
            self._unlock(no)
        if end < 0:
            return self.fb_incr(key, delta, now, exp_new, xx)
        if self.sync:
            self.writers[no].wait_durable(end)
        return new

    def get(self, bytes key):
        """What ``FuseDB.get`` returns for ``key`` before its default: the value's
        bytes (a counter as its ASCII decimal), or None if absent, deleted or
        expired by the clock (called only for an entry with an expiry, after
        the lock is released)."""
        if not self.open or PySet_GET_SIZE(self.fn_threads):
            return self.fb_get(key)
        cdef const char* k = PyBytes_AS_STRING(key)
        cdef Py_ssize_t klen = PyBytes_GET_SIZE(key)
        cdef uint64_t h = XXH3_64bits(k, klen), ver
        cdef int64_t leaf = self._route(k, klen, &ver)
        cdef int no = self.leaf_shard[leaf]
        cdef ShardC* sc = &self.shards[no]
        cdef Slabs* sl = &sc.slabs
        cdef char* slab
        cdef uint32_t s, voff
        cdef uint8_t kind = 0
        cdef double exp = 0.0
        cdef long long n = 0
        cdef object value = None
        cdef bint found = False
        cdef list segs = None
        self._lock(no)
        try:
            if self.hdr[M_ROUTE_VER] == ver:
                s = self._buffers_find(sc, leaf, k, klen, h, &slab)
                if s != NOT_FOUND:
                    found = True
                    kind = (<uint8_t*>(slab + sl.kind_off))[s]
                    exp = (<double*>(slab + sl.exp_off))[s]
                    voff = u32(slab, sl.voff_off)[s]
                    if kind == KIND_INT:
                        memcpy(&n, slab + sl.heap_off + voff, 8)
                    elif kind == KIND_VALUE:
                        value = PyBytes_FromStringAndSize(
                            slab + sl.heap_off + voff, u32(slab, sl.vlen_off)[s])
                if not found:
                    segs = self._segments_locked(leaf)
        finally:
            self._unlock(no)
        if not found:
            if segs is None:        # the route moved, or a segment is not open here yet
                return self.fb_get(key)
            for seg in segs:
                j = (<KSegment>seg).find(k, klen, h)
                if j >= 0:
                    found = True
                    kind, exp, value, n = _segment_entry(<KSegment>seg, j)
                    break
            if not found:
                return None
        if kind == KIND_DEL or (exp != 0.0 and exp <= self.clock()):
            return None
        if kind == KIND_INT:
            return _decimal(n)
        return value

    def modify(self, bytes key, fn):
        """Executor.modify's contract: the read-modify-write ``fn`` (a
        fusedb.core.ops ``op_*`` function: entry -> (result, write or None)) run
        on the key's entry under the shard lock, read from the buffers or the
        leaf's open segments, and its write applied as the pure path's Modify
        applies it. The pure path does everything else (no active buffer, a
        segment not open here, the route moved; after ``fn`` ran, a buffer or a
        ring without room, when it runs ``fn`` again: update() allows that).
        What ``fn`` raises propagates, nothing written."""
        if not self.open or PySet_GET_SIZE(self.fn_threads):
            return self.fb_modify(key, fn)
        cdef const char* k = PyBytes_AS_STRING(key)
        cdef Py_ssize_t klen = PyBytes_GET_SIZE(key), vlen = 0
        cdef uint64_t h = XXH3_64bits(k, klen), ver
        cdef int64_t leaf = self._route(k, klen, &ver)
        cdef int no = self.leaf_shard[leaf]
        cdef ShardC* sc = &self.shards[no]
        cdef Slabs* sl = &sc.slabs
        cdef char* slab
        cdef uint32_t s
        cdef uint8_t kind
        cdef int64_t end = -1
        cdef long long n = 0
        cdef bint done = False, ready = False
        cdef bytes value
        cdef list segs
        entry = result = None
        self._lock(no)
        try:
            # Without an active buffer no write can be done here: hand over before
            # fn runs (so it runs twice only when a buffer or the ring is full).
            if self.hdr[M_ROUTE_VER] == ver and self.active[leaf] >= 0:
                s = self._buffers_find(sc, leaf, k, klen, h, &slab)
                if s != NOT_FOUND:
                    ready = True
                    kind = (<uint8_t*>(slab + sl.kind_off))[s]
                    if kind == KIND_INT:
                        memcpy(&n, slab + sl.heap_off + u32(slab, sl.voff_off)[s], 8)
                        entry = (kind, n, (<double*>(slab + sl.exp_off))[s])
                    elif kind == KIND_VALUE:
                        entry = (kind, PyBytes_FromStringAndSize(
                                     slab + sl.heap_off + u32(slab, sl.voff_off)[s],
                                     u32(slab, sl.vlen_off)[s]),
                                 (<double*>(slab + sl.exp_off))[s])
                    else:
                        entry = (kind, None, 0.0)
                else:
                    segs = self._segments_locked(leaf)
                    if segs is not None:
                        ready = True
                        for seg in segs:
                            j = (<KSegment>seg).find(k, klen, h)
                            if j >= 0:
                                entry = _segment_as_entry(<KSegment>seg, j)
                                break
            if ready:
                result, write = fn(entry)
                if write is None:
                    done = True
                else:
                    kind = write[0]
                    if kind == KIND_VALUE:
                        value = write[1]
                        vlen = PyBytes_GET_SIZE(value)
                        end = self._write_locked(sc, leaf, k, klen, h, KIND_VALUE,
                                                 PyBytes_AS_STRING(value), vlen, 0, write[3])
                    elif kind == KIND_INT:
                        vlen = 8
                        end = self._write_locked(sc, leaf, k, klen, h, KIND_INT, NULL, 0,
                                                 write[2], write[3])
                    else:
                        end = self._write_locked(sc, leaf, k, klen, h, KIND_DEL, NULL, 0, 0,
                                                 0.0)
                    if end >= 0:
                        done = True
                        sc.stats[S_LOGICAL] += klen + vlen
        finally:
            self._unlock(no)
        if not done:
            return self.fb_modify(key, fn)
        if end >= 0 and self.sync:
            self.writers[no].wait_durable(end)
        return result

    # -- under the shard lock --------------------------------------------------------

    cdef uint32_t _buffers_find(self, ShardC* sc, int64_t leaf, const char* key,
                                Py_ssize_t klen, uint64_t h, char** slab_out) noexcept:
        """Shard.read_buffers_locked's search: the key's slot in the leaf's active,
        then frozen buffer (that buffer in ``slab_out``), or NOT_FOUND."""
        cdef Slabs* sl = &sc.slabs
        cdef int32_t sids[2]
        cdef uint32_t s
        cdef int i
        sids[0] = self.active[leaf]
        sids[1] = self.frozen[leaf]
        for i in range(2):
            if sids[i] >= 0:
                slab_out[0] = sl.base + <uint64_t>sids[i] * sl.slab_bytes
                s = _find(sl, slab_out[0], key, klen, h)
                if s != NOT_FOUND:
                    return s
        return NOT_FOUND

    cdef list _segments_locked(self, int64_t leaf):
        """The leaf's segments (KSegment), newest first, or None if one is not
        open in this process yet (the pure path opens it)."""
        cdef uint32_t n = self.nsegs[leaf], i
        cdef list out = []
        cdef PyObject* seg
        for i in range(n):
            seg = PyDict_GetItem(self.segcache, self.segs[leaf * MAX_SEGS + i])
            if seg == NULL:
                return None
            segment = <object>seg      # a reference of our own before any Python runs
            kv = segment.kview
            if kv is None:
                kv = segment.kview = KSegment(segment)
            out.append(kv)
        return out

    cdef int64_t _write_locked(self, ShardC* sc, int64_t leaf, const char* key,
                               Py_ssize_t klen, uint64_t h, uint8_t kind, const char* val,
                               Py_ssize_t vlen, long long ivalue, double exp) noexcept:
        """Shard.write_locked's plain case: -1 (nothing written) when it is not
        (no active buffer, no room in it, the ring wraps or has no room); else
        the WAL stream position after the record."""
        cdef int32_t sid = self.active[leaf]
        if sid < 0:
            return -1
        cdef Slabs* sl = &sc.slabs
        cdef char* slab = sl.base + <uint64_t>sid * sl.slab_bytes
        cdef uint32_t* hdr = <uint32_t*>slab
        cdef uint32_t s = _find(sl, slab, key, klen, h)
        if kind == KIND_INT:
            val = <const char*>&ivalue
            vlen = 8
        cdef uint64_t vcap = ((vlen + 7) & ~7) or 8
        if s != NOT_FOUND:
            if not (vlen <= u32(slab, sl.vcap_off)[s]
                    or ((hdr[H_HEAP] + 7) & ~7) + vcap <= sl.heap_bytes):
                return -1
        elif not (hdr[H_USED] < sl.nslots
                  and ((hdr[H_HEAP] + klen + 7) & ~7) + vcap <= sl.heap_bytes):
            return -1
        cdef uint64_t seq = self.seq[leaf] + 1
        cdef uint64_t start = sc.ring_hdr[R_HEAD]
        cdef int64_t end = _append(sc, seq, exp, kind, key, klen, val, vlen)
        if end < 0:
            return -1
        if hdr[H_USED] == 0:
            hdr[H_FIRST_LO] = start & 0xFFFFFFFF
            hdr[H_FIRST_HI] = start >> 32
        if s != NOT_FOUND:
            _update(sl, slab, s, seq, exp, kind, val, vlen)
        else:
            _insert(sl, slab, key, klen, h, seq, exp, kind, val, vlen)
        self.seq[leaf] = seq
        self.writes[leaf] += 1
        return end

    cdef int64_t _rmw_incr_locked(self, ShardC* sc, int64_t leaf, const char* key,
                                  Py_ssize_t klen, uint64_t h, long long delta, double now,
                                  double exp_new, long long* out) except -2:
        """The read-modify-write of fusedb.core.ops.op_incr, for a key that is a
        counter or missing: its entry from the active buffer, the frozen one or
        the leaf's open segments (newest first), the sum written as the pure
        path's Modify writes it. -1 (nothing written) for everything else."""
        cdef Slabs* sl = &sc.slabs
        cdef char* slab
        cdef uint8_t kind = 0
        cdef double exp = 0.0
        cdef long long base = 0, new
        cdef int64_t j
        cdef bint found = False
        cdef uint32_t s = self._buffers_find(sc, leaf, key, klen, h, &slab)
        if s != NOT_FOUND:
            found = True
            kind = (<uint8_t*>(slab + sl.kind_off))[s]
            exp = (<double*>(slab + sl.exp_off))[s]
            if kind == KIND_INT:
                memcpy(&base, slab + sl.heap_off + u32(slab, sl.voff_off)[s], 8)
        if not found:
            segs = self._segments_locked(leaf)
            if segs is None:
                return -1
            for seg in segs:
                j = (<KSegment>seg).find(key, klen, h)
                if j >= 0:
                    found = True
                    kind = (<KSegment>seg).kind[j]
                    exp = (<KSegment>seg).exp[j]
                    if kind == KIND_INT:
                        memcpy(&base, (<KSegment>seg).vals + (<KSegment>seg).voff[j], 8)
                    break
        if not found or kind == KIND_DEL or (exp != 0.0 and exp <= now):
            base = 0        # not alive: a new counter, expiring at exp_new
            exp = exp_new
        elif kind != KIND_INT:
            return -1       # a value: the pure path parses it (or raises)
        if fusedb_add_overflow(base, delta, &new):
            return -1       # the pure path raises IntegerOverflowError
        cdef int64_t end = self._write_locked(sc, leaf, key, klen, h, KIND_INT, NULL, 8, new,
                                              exp)
        if end >= 0:
            out[0] = new
        return end

    cdef int64_t _incr_locked(self, ShardC* sc, int64_t leaf, const char* key,
                              Py_ssize_t klen, uint64_t h, long long delta, double now,
                              long long* out) noexcept:
        """Shard.incr_in_place_locked: -1 unless ``key`` is a live counter in the
        active buffer and the sum fits 64 bits and the ring has room."""
        cdef int32_t sid = self.active[leaf]
        if sid < 0:
            return -1
        cdef Slabs* sl = &sc.slabs
        cdef char* slab = sl.base + <uint64_t>sid * sl.slab_bytes
        cdef uint32_t s = _find(sl, slab, key, klen, h)
        if s == NOT_FOUND or (<uint8_t*>(slab + sl.kind_off))[s] != KIND_INT:
            return -1
        cdef double exp = (<double*>(slab + sl.exp_off))[s]
        if exp != 0.0 and exp <= now:
            return -1
        cdef char* q = slab + sl.heap_off + u32(slab, sl.voff_off)[s]
        cdef long long cur, new
        memcpy(&cur, q, 8)
        if fusedb_add_overflow(cur, delta, &new):
            return -1
        cdef uint64_t seq = self.seq[leaf] + 1
        cdef int64_t end = _append(sc, seq, exp, KIND_INT, key, klen, <const char*>&new, 8)
        if end < 0:
            return -1
        memcpy(q, &new, 8)
        (<uint64_t*>(slab + sl.seq_off))[s] = seq
        self.seq[leaf] = seq
        self.writes[leaf] += 1
        out[0] = new
        return end


# -- buffers (fusedb.shm.slab) ----------------------------------------------------------

cdef inline uint32_t _find(Slabs* sl, char* slab, const char* key, Py_ssize_t klen,
                           uint64_t h) noexcept nogil:
    """Slab.find: the key's slot, or NOT_FOUND."""
    cdef uint32_t* index = u32(slab, sl.index_off)
    cdef uint64_t* hashes = <uint64_t*>(slab + sl.hash_off)
    cdef uint32_t i = h & sl.mask, s
    while True:
        s = index[i]
        if s == 0:
            return NOT_FOUND
        s -= 1
        if hashes[s] == h and u32(slab, sl.klen_off)[s] == klen \
                and memcmp(slab + sl.heap_off + u32(slab, sl.koff_off)[s], key, klen) == 0:
            return s
        i = (i + 1) & sl.mask


cdef inline void _insert(Slabs* sl, char* slab, const char* key, Py_ssize_t klen, uint64_t h,
                         uint64_t seq, double exp, uint8_t kind, const char* val,
                         Py_ssize_t vlen) noexcept nogil:
    """Slab.insert (room checked by the caller)."""
    cdef uint32_t* hdr = <uint32_t*>slab
    cdef uint32_t s = hdr[H_USED]
    cdef uint32_t koff = hdr[H_HEAP]
    cdef uint32_t voff = (koff + klen + 7) & ~7
    cdef uint32_t vcap = ((vlen + 7) & ~7) or 8
    cdef char* heap = slab + sl.heap_off
    memcpy(heap + koff, key, klen)
    if vlen:
        memcpy(heap + voff, val, vlen)
    (<uint64_t*>(slab + sl.hash_off))[s] = h
    (<uint64_t*>(slab + sl.seq_off))[s] = seq
    (<double*>(slab + sl.exp_off))[s] = exp
    u32(slab, sl.koff_off)[s] = koff
    u32(slab, sl.klen_off)[s] = klen
    u32(slab, sl.voff_off)[s] = voff
    u32(slab, sl.vlen_off)[s] = vlen
    u32(slab, sl.vcap_off)[s] = vcap
    (<uint8_t*>(slab + sl.kind_off))[s] = kind
    cdef uint32_t* index = u32(slab, sl.index_off)
    cdef uint32_t i = h & sl.mask
    while index[i]:
        i = (i + 1) & sl.mask
    index[i] = s + 1
    hdr[H_USED] = s + 1
    hdr[H_HEAP] = voff + vcap


cdef inline void _update(Slabs* sl, char* slab, uint32_t s, uint64_t seq, double exp,
                         uint8_t kind, const char* val, Py_ssize_t vlen) noexcept nogil:
    """Slab.update (room checked by the caller)."""
    cdef uint32_t* hdr = <uint32_t*>slab
    cdef uint32_t voff = u32(slab, sl.voff_off)[s]
    cdef uint32_t vcap
    if <uint32_t>vlen > u32(slab, sl.vcap_off)[s]:
        voff = (hdr[H_HEAP] + 7) & ~7
        vcap = (vlen + 7) & ~7
        hdr[H_HEAP] = voff + vcap
        u32(slab, sl.voff_off)[s] = voff
        u32(slab, sl.vcap_off)[s] = vcap
    if vlen:
        memcpy(slab + sl.heap_off + voff, val, vlen)
    u32(slab, sl.vlen_off)[s] = vlen
    (<uint8_t*>(slab + sl.kind_off))[s] = kind
    (<uint64_t*>(slab + sl.seq_off))[s] = seq
    (<double*>(slab + sl.exp_off))[s] = exp


# -- the WAL ring (fusedb.wal.ring) -----------------------------------------------------

cdef inline int64_t _append(ShardC* sc, uint64_t seq, double exp, uint8_t kind,
                            const char* key, Py_ssize_t klen, const char* val,
                            Py_ssize_t vlen) noexcept nogil:
    """Ring.append's plain case: the record fits before the ring's end and
    within its room; else -1 (the pure path pads, or waits for room)."""
    cdef uint64_t body = 40 + ((klen + vlen + 7) & ~7)
    cdef uint64_t total = (body + 31) & ~15
    cdef uint64_t* hdr = sc.ring_hdr
    cdef uint64_t head = hdr[R_HEAD]
    cdef uint64_t off = head % sc.ring_cap
    if off + total > sc.ring_cap or head + total - hdr[R_ROOM] > sc.ring_cap:
        return -1
    cdef char* d = sc.ring_data + off
    cdef uint64_t lsn = hdr[R_LSN]
    cdef uint32_t one = 1, zero = 0, blen = body, vl = vlen
    cdef uint16_t kl = klen
    cdef uint8_t pad = 0
    memcpy(d + 16, &lsn, 8)
    memcpy(d + 24, &one, 4)
    memcpy(d + 28, &zero, 4)
    memcpy(d + 32, &seq, 8)
    memcpy(d + 40, &exp, 8)
    d[48] = <char>kind
    d[49] = 0
    memcpy(d + 50, &kl, 2)
    memcpy(d + 52, &vl, 4)
    memcpy(d + 56, key, klen)
    if vlen:
        memcpy(d + 56 + klen, val, vlen)
    cdef uint64_t p = 56 + klen + vlen, end = 16 + body
    if p < end:
        memset(d + p, 0, end - p)
    memcpy(d + 8, &blen, 4)
    memcpy(d + 12, &T_MUTATIONS, 4)
    cdef uint64_t sum = XXH3_64bits(d + 8, end - 8)
    memcpy(d, &sum, 8)
    hdr[R_LSN] = lsn + 1
    # Publish the record: the WAL writer (another thread or process, no lock)
    # writes out [written, head), so head moves only after the record's bytes.
    fusedb_store_release(<unsigned long long*>&hdr[R_HEAD], head + total)
    return head + total


# -- segments and results ------------------------------------------------------------------

cdef tuple _segment_entry(KSegment seg, int64_t j):
    """(kind, exp, value bytes or None, counter) of entry ``j`` (ops.entry_at)."""
    cdef uint8_t kind = seg.kind[j]
    cdef uint64_t a = seg.voff[j]
    cdef long long n = 0
    if kind == KIND_INT:
        memcpy(&n, seg.vals + a, 8)
        return kind, seg.exp[j], None, n
    if kind == KIND_DEL:
        return kind, 0.0, None, 0
    return kind, seg.exp[j], PyBytes_FromStringAndSize(seg.vals + a, seg.voff[j + 1] - a), 0


cdef tuple _segment_as_entry(KSegment seg, int64_t j):
    """Entry ``j`` as fusedb.core.ops.entry_at gives it: (kind, payload, exp)."""
    kind, exp, value, n = _segment_entry(seg, j)
    return kind, (n if kind == KIND_INT else value), exp


cdef inline bytes _decimal(long long n):
    """ops.counter_bytes: the counter's ASCII decimal."""
    cdef char buf[24]
    cdef int m = snprintf(buf, sizeof(buf), "%lld", n)
    return PyBytes_FromStringAndSize(buf, m)

