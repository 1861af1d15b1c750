"""``FuseDB.stats()``: counters and gauges gathered from shared memory, plus the
state of each shard's worker process and the attached clients. Called by the
handle's thread; takes each shard lock in turn (O(leaves) under it), never two
at once, then the meta lock alone (O(attached clients) under it)."""

from __future__ import annotations


import psutil

from fusedb.core import retry
from fusedb.core.layout import H_HEAP, H_USED, W_REPAIRS
from fusedb.shm.meta import STAT_FIELDS
from fusedb.wal.ring import R_WAL_BYTES


def stats(x) -> dict:
    """The ``FuseDB.stats()`` dict of the database executor ``x`` runs on
    (fusedb.api.executor.Executor). Sizes in bytes. ``clients``: see
    :func:`client_stats`. ``shards``: one dict per shard; besides its arena,
    WAL, leaf and merge counts, its load (what shard balance evens out):

    * ``keys``: an estimate of the keys it holds: the entries of its leaves'
      segments plus the used slots of their buffers. A key is counted once per
      place it is held (a segment and a buffer, two segments), and deleted or
      expired entries count until a merge drops them.
    * ``bytes``: its leaves' segment files plus the heap bytes used in their
      buffers.
    * ``writes``: the mutations (put, incr, delete, ...) of the leaves it holds,
      since the database was opened (the sum of the leaves' counters,
      ``meta.writes``). Reads are not counted per shard: that would add a
      shared-memory write to every get.
    """
    meta = x.meta
    opts = x.opts
    leaves = x.routes.current()[2]
    totals = dict.fromkeys(STAT_FIELDS, 0)
    frozen = active = 0
    fill = 0.0
    shards, shard_segs = [], []
    for shard in x.shards:
        segs: set[int] = set()
        slabs: set[int] = set()     # a slab frozen for both halves of a split: once
        writes = leaf_count = 0
        with shard.lock:
            own = {n: int(v) for n, v in zip(STAT_FIELDS, meta.shard_stats(shard.no))}
            for name in STAT_FIELDS:
                totals[name] += own[name]
            free = shard.arena.free_count()
            for leaf in leaves:
                if meta.shard[leaf] != shard.no:
                    continue
                leaf_count += 1
                segs.update(meta.segs_of(leaf))
                writes += int(meta.writes[leaf])
                if meta.frozen[leaf] >= 0:
                    frozen += 1
                    slabs.add(int(meta.frozen[leaf]))
                a = meta.active[leaf]
                if a >= 0:
                    active += 1
                    fill += shard.slabs[a].fill()
                    slabs.add(int(a))
            buffered = [(int(shard.slabs[sid].hdr[H_USED]), int(shard.slabs[sid].hdr[H_HEAP]))
                        for sid in slabs]
        shard_segs.append(segs)
        # Counted by the shard's WAL writer (in the worker process, multiprocess)
        # and published in the ring header, so every process sees it.
        shards.append({"shard": shard.no, "slabs_total": shard.arena.nslabs,
                       "slabs_free": free, "wal_bytes": shard.ring.hdr[R_WAL_BYTES],
                       "wal_max_bytes": opts.wal_max_bytes, "leaves": leaf_count,
                       "merges": own["merges"], "splits": own["splits"],
                       "write_amplification": _amplification(own),
                       "keys": sum(used for used, _heap in buffered),
                       "bytes": sum(heap for _used, heap in buffered), "writes": writes})
    # The segments' sizes and entry counts, read with no lock held (opening a
    # file this process has not opened yet is I/O).
    seg_bytes = nsegs = 0
    for row, segs in zip(shards, shard_segs):
        for seg in _segments(x, segs):
            row["keys"] += seg.count
            row["bytes"] += seg.size
            seg_bytes += seg.size
        nsegs += len(segs)
    return {
        "leaves": len(leaves),
        "segments": nsegs,
        "segment_bytes": seg_bytes,
        **totals,
        "write_amplification": _amplification(totals),
        "active_buffers": active,
        "frozen_buffers": frozen,
        "buffer_fill": (fill / active) if active else 0.0,
        "arena_slabs_total": sum(s["slabs_total"] for s in shards),
        "arena_slabs_used": sum(s["slabs_total"] - s["slabs_free"] for s in shards),
        "wal_bytes": sum(s["wal_bytes"] for s in shards),
        "shards": shards,
        "mode": opts.mode,
        # Whether this handle's put/get/incr run the compiled kernel
        # (fusedb.core.kernel: False with FUSEDB_NO_EXTENSIONS or when it is not built).
        "compiled": x.kernel is not None,
        "workers": worker_stats(x),
        **client_stats(x),
    }


def _segments(x, segids):
    """The open Segment of each id in ``segids`` (opened here if this process has
    not yet), skipping any merged away since the caller read the leaf table."""
    for segid in sorted(segids):
        found = x.store.segments.open_segments([segid], missing_ok=True)
        if found is not None:
            yield found[0]


def _amplification(counts: dict) -> float:
    """Segment bytes written per logical byte written (0.0 before any write)."""
    logical = counts["logical_bytes_written"]
    return counts["segment_bytes_written"] / logical if logical else 0.0


def client_stats(x) -> dict:
    """``clients``: the processes attached with ``fusedb.connect`` (or a
    forked or unpickled handle) and still running, one entry per attached
    handle: ``{"pid": int, "since": float}`` (unix seconds when it attached),
    in no set order; the router and the workers are not listed, and neither
    is an embedded database's one process (``[]``). ``clients_unlisted``:
    attaches since open that found all CLIENT_SLOTS (256) registry slots
    taken by running processes (they work, unlisted). Takes the meta lock
    (no shard lock held); clients that died since are dropped from the
    registry here."""
    if not x.store.multiprocess:
        return {"clients": [], "clients_unlisted": 0}
    meta = x.meta
    with x.store.meta_lock:
        listed = meta.live_clients()
        unlisted = meta.unlisted_clients()
    return {"clients": [{"pid": pid, "since": since} for pid, since in listed],
            "clients_unlisted": unlisted}


def worker_stats(x) -> list[dict]:
    """Per shard: the process doing its background work, its CPU and memory,
    and the state of its background I/O (fusedb.core.retry.shard_state):
    ``background_error`` (str, or None while healthy), ``last_background_error``
    (the latest one, kept after the shard healed) and ``background_failures``
    (failed attempts since open, each retried)."""
    meta = x.meta
    out = []
    for shard in x.shards:
        pid = x.store.worker_pid(shard.no)
        row = {"shard": shard.no, "pid": pid,
               "repairs": meta.worker_slots(shard.no)[W_REPAIRS],
               **retry.shard_state(meta.shard_faults(shard.no))}
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                t = p.cpu_times()
                row.update(cpu_seconds=t.user + t.system, cpu_num=p.cpu_num(),
                           cpu_affinity=p.cpu_affinity(), rss_bytes=p.memory_info().rss)
        except psutil.Error:
            row["alive"] = False
        out.append(row)
    return out
