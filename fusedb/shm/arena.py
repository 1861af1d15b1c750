"""A shard's arena: a fixed-size shared-memory region cut into equal slabs.

Layout (docs/format.md, "Arena"; the numbers: fusedb.core.layout)::

    header  u64[8]        [0] magic "FUSEARN1", [1] layout version, [2] slab count,
                          [3] slab bytes, [4] slots per slab, [5] free-stack top
    free    u32[nslabs]   stack of free slab numbers; entries [0, top) are free
    slabs   from the first 4096-byte boundary after the stack, slab i at
            data_off + i * slab_bytes

Allocation and release are O(1) pops and pushes of the free stack, made under the
shard lock. The arena never grows: when the stack is empty, writers wait for the
merge worker to free a slab (back-pressure, see shard).
"""

from __future__ import annotations

import numpy as np

from fusedb.core.layout import (A_FREE_TOP, A_MAGIC, A_NSLABS, A_NSLOTS, A_SLAB_BYTES,
                                A_VERSION, ARENA_HDR_BYTES, ARENA_MAGIC, ARENA_VERSION, H_STATE,
                                arena_data_off, arena_region_bytes)
from fusedb.shm.region import Region
from fusedb.shm.slab import STATE_ACTIVE, STATE_FREE, Slab, SlabLayout

MAGIC = ARENA_MAGIC
LAYOUT_VERSION = ARENA_VERSION
region_bytes = arena_region_bytes


class Arena:
    """One shard's slabs, one object per attached process: created (``create=True``)
    by the router or embedded process, attached by workers and clients. ``alloc``
    and ``release_slab`` run under the shard's lock (writers freeze, the merge
    worker frees)."""

    def __init__(self, nm: str, nslabs: int = 0, slab_bytes: int = 0, nslots: int = 0,
                 create: bool = False):
        if create:
            self.region = Region(nm, region_bytes(nslabs, slab_bytes))
        else:
            self.region = Region(nm)
        buf = self.region.buf
        self.hdr = buf[0:ARENA_HDR_BYTES].cast("Q")
        if create:
            self.hdr[A_MAGIC] = MAGIC
            self.hdr[A_VERSION] = LAYOUT_VERSION
            self.hdr[A_NSLABS] = nslabs
            self.hdr[A_SLAB_BYTES] = slab_bytes
            self.hdr[A_NSLOTS] = nslots
        elif self.hdr[A_MAGIC] != MAGIC or self.hdr[A_VERSION] != LAYOUT_VERSION:
            raise RuntimeError(f"shared memory {nm} is not a FuseDB arena of this version")
        self.nslabs = nslabs = self.hdr[A_NSLABS]
        self.layout = SlabLayout(self.hdr[A_SLAB_BYTES], self.hdr[A_NSLOTS])
        self.free = buf[ARENA_HDR_BYTES:ARENA_HDR_BYTES + 4 * nslabs].cast("I")
        off = arena_data_off(nslabs)
        #: Every slab's header as one strided u32[nslabs, 16] view (copy_headers).
        self._headers = np.ndarray((nslabs, 16), np.uint32, buf, off,
                                   (self.layout.slab_bytes, 4))
        self.slabs = [Slab(buf, off + i * self.layout.slab_bytes, self.layout, i)
                      for i in range(nslabs)]
        if create:
            # Stack order: slab 0 is popped first.
            for i in range(nslabs):
                self.free[i] = nslabs - 1 - i
            self.hdr[A_FREE_TOP] = nslabs

    # Both under the shard lock.
    def alloc(self, leaf_id: int) -> int:
        """Pop a free slab, reset it for ``leaf_id``; -1 if none is free."""
        top = self.hdr[A_FREE_TOP]
        if top == 0:
            return -1
        top -= 1
        sid = self.free[top]
        self.hdr[A_FREE_TOP] = top
        self.slabs[sid].reset(leaf_id, STATE_ACTIVE)
        return sid

    def release_slab(self, sid: int) -> None:
        self.slabs[sid].hdr[H_STATE] = STATE_FREE
        top = self.hdr[A_FREE_TOP]
        self.free[top] = sid
        self.hdr[A_FREE_TOP] = top + 1

    def copy_headers(self) -> np.ndarray:
        """A copy of every slab's header: u32[nslabs, 16] (slots H_*), by one
        numpy copy (no Python work per slab: for a snapshot under the shard
        lock)."""
        return self._headers.copy()

    def free_count(self) -> int:
        return self.hdr[A_FREE_TOP]

    def close(self) -> None:
        self._headers = None    # its export of the region, before the unmap
        for s in self.slabs:
            s.release()
        self.free.release()
        self.hdr.release()
        self.region.close()
