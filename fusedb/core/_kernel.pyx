# cython: language_level=3
"""The compiled kernel (placeholder while it is written)."""

cdef extern from "xxhash.h":
    ctypedef unsigned long long XXH64_hash_t
    XXH64_hash_t XXH3_64bits(const void* data, size_t length) nogil


def key_hash(bytes key):
    """xxh3_64 of ``key`` (same as fusedb.core.entry.key_hash)."""
    return XXH3_64bits(<const char*>key, len(key))
