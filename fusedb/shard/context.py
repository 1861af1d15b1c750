"""What a shard and its merge loop need from the process they run in.

:class:`fusedb.shard.shard.Shard`, :class:`fusedb.shard.merging.Merger` and
:class:`fusedb.shard.worker.Worker` are given one :class:`ShardContext` at
construction and use nothing else of the process's runtime. The runtime
(fusedb.runtime.state.Runtime, shared by every role) implements it; the shard
layer never imports the runtime (import layers: shard < runtime).
"""

from __future__ import annotations

from typing import Any, Protocol


class SegmentFiles(Protocol):
    """What the shard layer uses of this process's segment cache
    (fusedb.runtime.segcache.SegmentCache, one per process): Merger and Worker
    call it on the shard's merge loop with no shard lock held. Its own thread
    lock guards inserts and removals; ``write_new_segment`` takes the meta lock
    only to draw the segment id."""

    def open_segments(self, segids: list[int], missing_ok: bool = False,
                      verify: bool = False) -> Any: ...

    def write_new_segment(self, run) -> tuple[int, int]: ...

    def forget(self, segids: list[int]) -> None: ...


class ShardContext(Protocol):
    """The narrow view of the process's runtime a shard uses.

    ``path``: the database directory; ``opts``: its Options; ``meta``: the meta
    block (fusedb.shm.meta.Meta); ``meta_lock``: its lock (a thread lock when
    embedded, a ProcLock when multiprocess); ``segcache``: segment id -> open
    Segment (read under a shard lock by readers); ``segments``: the cache's
    operations. ``wake(no)`` wakes shard ``no``'s merge loop, ``kick_wal_writer(no)``
    its WAL writer (both cheap, callable under a shard lock); ``fail(error)``
    records a merge loop's fatal error for every caller; ``after_publish(replaced)``
    writes the manifest, truncates the WAL and deletes ``replaced`` segments
    (fusedb.runtime.catalog; the merge loop, no lock held). For leaf moves
    (fusedb.shard.moving): ``shards`` (every Shard of this process, by number),
    ``manifest_lock``, and ``stage_move(leaf, dst)``, which writes the manifest
    of the move's outcome as ``MANIFEST.tmp`` (caller holds the manifest lock)."""

    path: str
    opts: Any
    meta: Any
    meta_lock: Any
    segcache: dict
    segments: SegmentFiles
    shards: list
    manifest_lock: Any

    def wake(self, shard_no: int) -> None: ...

    def kick_wal_writer(self, shard_no: int) -> None: ...

    def fail(self, error: BaseException) -> None: ...

    def after_publish(self, replaced: list[int]) -> None: ...

    def stage_move(self, leaf: int, dst: int) -> None: ...
