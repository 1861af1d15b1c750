"""A process-local cache of the routing table, revalidated by version.

The routing table lives in the meta block (see fusedb.shm.meta). Every operation
compares the table's version with the cached one (one shared-memory read) and
re-copies the table only when a split has changed it. After taking the shard
lock the caller checks the version again: splits happen under the shard lock, so
an unchanged version means the leaf it routed to still owns the key.
"""

from __future__ import annotations

from bisect import bisect_right

from fusedb.shm.meta import M_ROUTE_VER, Meta


class RouteCache:
    """This process's copy of the routing table: ``state`` = (route version,
    leaf lower bounds, leaf ids), sorted by bound. One per open database per
    process, made by its Executor; used by every thread that runs operations,
    with no lock: the copy is taken under the seqlock (Meta.route_snapshot) and
    replaced whole, so threads share it safely. A caller rechecks the version
    (:meth:`valid`) under the shard lock it then takes."""

    def __init__(self, meta: Meta):
        self.meta = meta
        self.hdr = meta.hdr
        self.state: tuple[int, list[bytes], list[int]] = (-1, [], [])

    def current(self) -> tuple[int, list[bytes], list[int]]:
        st = self.state
        if self.hdr[M_ROUTE_VER] != st[0]:
            st = self.state = self.meta.route_snapshot()
        return st

    def route(self, key: bytes) -> tuple[int, int]:
        """(route version, leaf id) of ``key``."""
        st = self.state
        if self.hdr[M_ROUTE_VER] != st[0]:
            st = self.state = self.meta.route_snapshot()
        return st[0], st[2][bisect_right(st[1], key) - 1]

    def valid(self, version: int) -> bool:
        return self.hdr[M_ROUTE_VER] == version

    @staticmethod
    def leaf_range(st: tuple[int, list[bytes], list[int]], pos: int) -> tuple[bytes, bytes | None]:
        bounds = st[1]
        return bounds[pos], (bounds[pos + 1] if pos + 1 < len(bounds) else None)

    @staticmethod
    def position(st: tuple[int, list[bytes], list[int]], key: bytes) -> int:
        return bisect_right(st[1], key) - 1
