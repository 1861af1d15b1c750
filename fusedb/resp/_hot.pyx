# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled hot path of a server process: GET, SET and INCR of a pipelined
read, parsed and answered in C, calling the compiled kernel directly.

A connection (fusedb.resp.conn) gives each read to :meth:`HotPath.run` first,
when nothing of an earlier read is pending. ``run`` takes, from the start of
the read, each complete request that is exactly ``GET key``, ``SET key
value`` or ``INCR key`` (a RESP array of bulk strings, the name in any case;
the form every Redis client sends, lengths without leading zeros) with a key
of 1..max_key_size bytes and a value of at most max_value_size bytes; runs it
on the kernel (fusedb.core._kernel.Kernel get / put / incr: the same calls
FuseDB.get / put / incr make) and writes its reply. It stops at the first
request that is anything else (another command, an option, an inline
command, a frame cut at the end of the read, a malformed frame): that request
and the rest go to the general path (parser, command table), which gives
every reply and error exactly. A request whose kernel call raises is taken,
and stops the run: its reply is the error (``error``), never a second run.
So this path changes no reply: it is the same commands without the Python
per request. Same bytes, same results: the tests run both (FUSEDB_NO_EXTENSIONS
turns this module off with the kernel).

Wire format: the RESP specification (redis.io/docs/reference/protocol-spec,
"Sending commands to a Redis server": an array of bulk strings).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append
from libc.string cimport memcpy
from libc.stdio cimport snprintf

cdef bytes OK = b"+OK\r\n"
cdef bytes NULL2 = b"$-1\r\n"
cdef bytes NULL3 = b"_\r\n"

cdef enum:
    MAX_DIGITS = 10          # a bulk length of up to 10 digits


cdef inline Py_ssize_t _number(const char* p, Py_ssize_t i, Py_ssize_t end,
                               Py_ssize_t* value) noexcept:
    """Parse ``digits\\r\\n`` at ``p[i]``: the index after it, or -1 (incomplete,
    malformed, more than MAX_DIGITS digits)."""
    cdef Py_ssize_t n = 0, start = i
    while i < end and p[i] >= 48 and p[i] <= 57:
        n = n * 10 + (p[i] - 48)
        i += 1
        if i - start > MAX_DIGITS:
            return -1
    if i == start or i + 1 >= end or p[i] != 13 or p[i + 1] != 10:
        return -1
    if p[start] == 48 and i - start > 1:      # "01": Redis's string2ll refuses it
        return -1
    value[0] = n
    return i + 2


cdef inline Py_ssize_t _bulk(const char* p, Py_ssize_t i, Py_ssize_t end,
                             Py_ssize_t* off, Py_ssize_t* length) noexcept:
    """Parse ``$len\\r\\n<len bytes>\\r\\n`` at ``p[i]``: the index after it
    (``off``, ``length``: the payload), or -1."""
    if i >= end or p[i] != 36:       # '$'
        return -1
    i = _number(p, i + 1, end, length)
    if i < 0 or i + length[0] + 2 > end:
        return -1
    off[0] = i
    i += length[0]
    if p[i] != 13 or p[i + 1] != 10:
        return -1
    return i + 2


cdef inline int _name(const char* p, Py_ssize_t off, Py_ssize_t n) noexcept:
    """1 GET, 2 SET, 3 INCR (any case), 0 anything else."""
    cdef char a, b, c, d
    if n == 3:
        a, b, c = p[off] | 32, p[off + 1] | 32, p[off + 2] | 32
        if b == 101 and c == 116:            # "et"
            if a == 103:
                return 1
            if a == 115:
                return 2
        return 0
    if n == 4:
        a, b, c, d = p[off] | 32, p[off + 1] | 32, p[off + 2] | 32, p[off + 3] | 32
        if a == 105 and b == 110 and c == 99 and d == 114:      # "incr"
            return 3
    return 0


cdef class HotPath:
    """GET / SET / INCR of one database handle (a fusedb.FuseDB whose executor
    has the compiled kernel). Counters (``gets``, ``sets``, ``incrs``,
    ``misses``) count what :meth:`run` answered; the connection adds them to
    the server's statistics and zeroes them."""

    cdef object kget, kput, kincr, clock
    cdef Py_ssize_t max_key, max_value
    cdef public long long gets, sets, incrs, misses
    #: The last request answered: 1 GET, 2 SET, 3 INCR (for CLIENT LIST's cmd=).
    cdef public int last
    #: The exception of the last request taken, when its kernel call raised
    #: (its reply is that error's; the caller reads and clears it), else None.
    cdef public object error

    def __init__(self, db):
        kernel = db._x.kernel
        if kernel is None:
            raise ValueError("the hot path needs the compiled kernel")
        self.kget = kernel.get
        self.kput = kernel.put
        self.kincr = kernel.incr
        self.clock = db._clock
        self.max_key = db._max_key
        self.max_value = db._max_value
        self.error = None

    def run(self, bytes data, int resp, list out):
        """Run the leading GET / SET / INCR requests of ``data`` (one read),
        appending each reply (bytes) to ``out``; ``resp`` (2 or 3) chooses the
        null of a GET miss. Returns the number of bytes of ``data`` taken
        (0: none)."""
        cdef const char* p = PyBytes_AS_STRING(data)
        cdef Py_ssize_t end = PyBytes_GET_SIZE(data), pos = 0, i, argc = 0
        cdef Py_ssize_t noff = 0, nlen = 0, koff = 0, klen = 0, voff = 0, vlen = 0
        cdef int which
        cdef char buf[32]
        cdef int w
        cdef bytes null = NULL3 if resp == 3 else NULL2
        while pos < end:
            if p[pos] != 42:             # '*'
                break
            i = _number(p, pos + 1, end, &argc)
            if i < 0 or argc < 2 or argc > 3:
                break
            i = _bulk(p, i, end, &noff, &nlen)
            if i < 0:
                break
            which = _name(p, noff, nlen)
            if which == 0 or (argc == 3) != (which == 2):
                break
            i = _bulk(p, i, end, &koff, &klen)
            if i < 0 or klen == 0 or klen > self.max_key:
                break
            if which == 2:
                i = _bulk(p, i, end, &voff, &vlen)
                if i < 0 or vlen > self.max_value:
                    break
            key = PyBytes_FromStringAndSize(p + koff, klen)
            try:
                if which == 1:
                    v = self.kget(key)
                    if v is None:
                        self.misses += 1
                        PyList_Append(out, null)
                    else:
                        PyList_Append(out, _bulk_reply(v))
                    self.gets += 1
                elif which == 2:
                    self.kput(key, PyBytes_FromStringAndSize(p + voff, vlen), 0.0)
                    PyList_Append(out, OK)
                    self.sets += 1
                else:
                    n = self.kincr(key, 1, self.clock())
                    w = snprintf(buf, 32, b":%lld\r\n", <long long>n)
                    PyList_Append(out, PyBytes_FromStringAndSize(buf, w))
                    self.incrs += 1
            except Exception as e:
                # Its reply is the error's (fusedb.resp.conn maps it as the command
                # table does). Never handed to the general path: a kernel call can
                # raise after writing (DiskError from a sync write's wait), and a
                # second run would apply it twice.
                self.error = e
                self.last = which
                return i
            pos = i
            self.last = which
        return pos


cdef bytes _bulk_reply(bytes v):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(v)
    cdef char head[24]
    cdef int h = snprintf(head, 24, b"$%zd\r\n", n)
    cdef bytes r = PyBytes_FromStringAndSize(NULL, h + n + 2)
    cdef char* q = PyBytes_AS_STRING(r)
    memcpy(q, head, h)
    memcpy(q + h, PyBytes_AS_STRING(v), n)
    q[h + n] = 13
    q[h + n + 1] = 10
    return r



def frames_end(list frames, Py_ssize_t start, bytes data):
    """Where ``frames[start:]`` (lists of bytes, parsed by hiredis from the start
    of ``data``) end in ``data``, checking that each is an array of bulk strings
    there (hiredis also returns a ``+status`` item as bytes, which Redis
    refuses); -1 if one is not. The request reader calls it per read to find
    where hiredis stopped (fusedb.resp.parse.RequestReader)."""
    cdef const char* p = PyBytes_AS_STRING(data)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data), pos = 0, i, j, n
    cdef list argv
    for i in range(start, len(frames)):
        argv = <list>frames[i]
        if pos >= end or p[pos] != 42:
            return -1
        pos += 3 + _digits(len(argv))
        for j in range(len(argv)):
            if pos >= end or p[pos] != 36:
                return -1
            n = PyBytes_GET_SIZE(argv[j])
            pos += n + 5 + _digits(n)
    return pos if pos <= end else -1


cdef inline Py_ssize_t _digits(Py_ssize_t n) noexcept:
    cdef Py_ssize_t d = 1
    while n >= 10:
        n //= 10
        d += 1
    return d
