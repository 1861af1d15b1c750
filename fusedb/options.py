"""Options of :func:`fusedb.open`, their defaults, and their validation.

Every size is in bytes, every time in seconds. ``docs/design.md`` explains how
the sizes relate (a slab must hold the largest entry; an arena holds a whole
number of slabs).
"""

from __future__ import annotations

import difflib
import grp
import time
from dataclasses import dataclass, field, fields
from collections.abc import Callable, Iterable

from fusedb.core.layout import MAX_SEGS, slab_offsets
from fusedb.errors import InvalidArgumentError, UnknownOptionError

KiB = 1024
MiB = 1024 * KiB

#: Most segments a leaf keeps before the scheduler merges them into one.
MAX_SEGMENTS_LIMIT = MAX_SEGS   # segment ids a leaf's table entry holds


@dataclass(frozen=True)
class Options:
    """Tunables of one database (each field's comment below; README "Options").
    No lock: immutable value, read by any thread. Built and validated
    (InvalidArgumentError) by ``fusedb.open`` from its keyword arguments; a
    router stores it in the meta block (:meth:`to_json`) and attaching workers
    and clients rebuild it from there (:meth:`from_json`)."""

    #: Largest key accepted, in bytes (keys must also be non-empty).
    max_key_size: int = 512
    #: Largest value accepted, in bytes.
    max_value_size: int = 16 * KiB
    #: Number of shards: each owns one arena, one lock and one merge worker.
    shards: int = 1
    #: "embedded" (one process; workers are threads) or "multiprocess" (a worker
    #: process per shard; other processes attach with fusedb.connect). open()
    #: picks "multiprocess" when ``shards`` is given and "embedded" otherwise.
    mode: str = "embedded"
    #: Keys at which a *new* database starts new leaves (pre-splitting), dealt to
    #: the shards in contiguous runs. Without them a new database starts with one
    #: leaf per shard, split on the first key byte (good for binary or hashed
    #: keys; keys sharing a prefix all start in one shard). Ignored once the
    #: database exists: leaves then split where the data says.
    split_keys: tuple = ()
    #: Multiprocess: pin worker processes to CPUs (True: worker i to the i-th CPU
    #: this process may use; a tuple of CPU numbers: worker i to cpus[i % len]).
    pin: bool | tuple = False
    #: Multiprocess: longest wait for a shard lock before LockTimeoutError. A lock
    #: left by a dead process is repaired long before (see docs/design.md).
    lock_timeout: float = 10.0
    #: Multiprocess: longest wait for each worker to merge and exit at close.
    close_timeout: float = 120.0
    #: Size of one leaf buffer (a slab of the arena): hash index + slots + heap.
    buffer_bytes: int = 256 * KiB
    #: Number of entry slots per buffer.
    buffer_slots: int = 2048
    #: Size of each shard's shared-memory arena; a whole number of buffers.
    arena_bytes: int = 32 * MiB
    #: A leaf whose segments exceed this many bytes is split in two.
    leaf_max_bytes: int = 16 * MiB
    #: Buffers frozen within ``hot_window`` seconds that make a leaf "hot" (split).
    hot_fills: int = 8
    #: Window, in seconds, for ``hot_fills``.
    hot_window: float = 10.0
    #: A leaf is not split (for heat) with fewer entries than this.
    min_split_entries: int = 64
    #: Segments a leaf may keep before a full merge folds them into one.
    max_segments: int = 4
    #: Most leaves in the routing table; splits stop there.
    max_leaves: int = 4096
    #: Fraction of free slabs below which cold leaves are merged to free memory.
    low_free_fraction: float = 0.25
    #: Longest a write waits for buffer memory before ``WriteStallError``.
    write_timeout: float = 10.0
    #: Worker wake-up period when nothing signals it.
    merge_tick: float = 0.05
    #: Durability mode: "sync", "interval" or "none" (see README, "Durability").
    durability: str = "interval"
    #: In "interval" mode, the longest time between two WAL fsyncs.
    sync_interval: float = 0.1
    #: Size of each shard's WAL ring in shared memory (multiple of 16).
    wal_ring_bytes: int = 4 * MiB
    #: A WAL file is closed and a new one started past this size.
    wal_file_bytes: int = 64 * MiB
    #: Bound on each shard's WAL files on disk: past it, the buffers holding the
    #: oldest log positions are merged so the oldest files can be deleted (RocksDB's
    #: ``max_total_wal_size``). At least ``wal_file_bytes`` (files are deleted
    #: whole). None: ``4 * arena_bytes``, raised to ``2 * wal_file_bytes`` if
    #: smaller (docs/design.md, "Scheduler", explains the choice).
    wal_max_bytes: int | None = None
    #: Share the database with a group (a name or a gid; kept as the gid): the
    #: directory becomes 02770 with that group, its files 0660, its shared memory
    #: 0660 of that group, so processes of the group can connect (README, "Who
    #: can attach"). None: the owner only (0700, 0600), unless the directory is
    #: already shared so (then its group).
    group: int | str | None = None
    #: Time source for TTLs (seconds, float). Tests inject a fake clock.
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "clock":
                if not callable(v):
                    raise InvalidArgumentError("clock must be callable")
                continue
            if f.name == "mode":
                if v not in ("embedded", "multiprocess"):
                    raise InvalidArgumentError(
                        f"mode must be 'embedded' or 'multiprocess', got {v!r}")
                continue
            if f.name == "pin":
                if isinstance(v, bool):
                    continue
                if not (isinstance(v, (tuple, list)) and v and
                        all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                            for c in v)):
                    raise InvalidArgumentError(f"pin must be a bool or a list of CPU "
                                               f"numbers, got {v!r}")
                object.__setattr__(self, "pin", tuple(v))
                continue
            if f.name == "split_keys":
                if not isinstance(v, (list, tuple)):
                    raise InvalidArgumentError("split_keys must be a list of keys")
                keys = [k.encode() if isinstance(k, str) else k for k in v]
                if not all(isinstance(k, bytes) and 0 < len(k) <= self.max_key_size
                           for k in keys):
                    raise InvalidArgumentError(
                        "split_keys must be non-empty bytes or str keys of at most "
                        "max_key_size bytes")
                if keys != sorted(set(keys)):
                    raise InvalidArgumentError("split_keys must be sorted and distinct")
                object.__setattr__(self, "split_keys", tuple(keys))
                continue
            if f.name == "wal_max_bytes" and v is None:
                continue     # resolved below, from arena_bytes and wal_file_bytes
            if f.name == "group":
                object.__setattr__(self, "group", None if v is None else group_id(v))
                continue
            if f.name == "durability":
                if v not in ("sync", "interval", "none"):
                    raise InvalidArgumentError(
                        f"durability must be 'sync', 'interval' or 'none', got {v!r}")
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidArgumentError(f"option {f.name} must be a number, got {v!r}")
            if v <= 0:
                raise InvalidArgumentError(f"option {f.name} must be positive, got {v!r}")
        if self.wal_max_bytes is None:
            object.__setattr__(self, "wal_max_bytes",
                               max(4 * self.arena_bytes, 2 * self.wal_file_bytes))
        ints = ("max_key_size", "max_value_size", "shards", "buffer_bytes", "buffer_slots",
                "arena_bytes", "leaf_max_bytes", "hot_fills", "min_split_entries",
                "max_segments", "max_leaves", "wal_ring_bytes", "wal_file_bytes",
                "wal_max_bytes")
        for name in ints:
            if not isinstance(getattr(self, name), int):
                raise InvalidArgumentError(f"option {name} must be an int")
        if self.max_key_size > 4096:
            raise InvalidArgumentError("max_key_size must be <= 4096")
        if self.max_segments > MAX_SEGMENTS_LIMIT:
            raise InvalidArgumentError(f"max_segments must be <= {MAX_SEGMENTS_LIMIT}")
        if self.buffer_bytes % 4096:
            raise InvalidArgumentError("buffer_bytes must be a multiple of 4096")
        if self.buffer_slots < 4:
            raise InvalidArgumentError("buffer_slots must be >= 4")
        if self.arena_bytes // self.buffer_bytes < 2:
            raise InvalidArgumentError("arena_bytes must hold at least 2 buffers")
        if self.wal_ring_bytes % 16 or self.wal_ring_bytes < 4 * (self.max_key_size +
                                                                  self.max_value_size + 64):
            raise InvalidArgumentError("wal_ring_bytes must be a multiple of 16 holding at "
                                       "least four of the largest records")
        if self.wal_max_bytes < self.wal_file_bytes:
            raise InvalidArgumentError(
                f"wal_max_bytes={self.wal_max_bytes} is below wal_file_bytes="
                f"{self.wal_file_bytes}: WAL files are deleted whole, so the bound must "
                f"hold at least one")
        if len(self.split_keys) + 1 > self.max_leaves:
            raise InvalidArgumentError("split_keys make more leaves than max_leaves")
        if self.min_split_entries < 2:
            raise InvalidArgumentError("min_split_entries must be >= 2")
        if self.low_free_fraction >= 1:
            raise InvalidArgumentError("low_free_fraction must be < 1")
        heap_bytes = self.buffer_bytes - slab_offsets(self.buffer_slots)[2]
        need = self.max_key_size + self.max_value_size + 16
        if heap_bytes < need:
            raise InvalidArgumentError(
                f"buffer_bytes={self.buffer_bytes} with buffer_slots={self.buffer_slots} leaves "
                f"{heap_bytes} heap bytes; the largest entry needs {need}: raise "
                f"buffer_bytes or lower max_key_size/max_value_size")

    def to_json(self) -> dict:
        """The options as JSON values (the clock is not carried: attached
        processes use ``time.time``)."""
        out = {f.name: (list(v) if isinstance(v, tuple) else v)
               for f in fields(self) if f.name != "clock"
               for v in [getattr(self, f.name)]}
        out["split_keys"] = [k.hex() for k in self.split_keys]
        return out

    @classmethod
    def from_json(cls, obj: dict) -> Options:
        obj = dict(obj, split_keys=[bytes.fromhex(k) for k in obj.get("split_keys", [])])
        return cls(**{k: v for k, v in obj.items() if k in {f.name for f in fields(cls)}})

    @property
    def wal_limit_bytes(self) -> int:
        """Bytes of a shard's WAL files on disk at which its writers are held back
        until merges let the oldest files be deleted: ``wal_max_bytes +
        wal_file_bytes``. ``wal_max_bytes`` triggers the merges (scheduler rule
        4); files are deleted whole, so one file above it is the smallest margin
        that lets a round of merges that keeps up finish without stalling
        writers. The WAL on disk per shard never passes this plus one ring
        (``wal_ring_bytes``) plus 64 bytes per file started meanwhile
        (docs/design.md, "Back-pressure")."""
        return self.wal_max_bytes + self.wal_file_bytes

    @property
    def slabs_per_arena(self) -> int:
        return self.arena_bytes // self.buffer_bytes


#: The shard count of a daemon (``fusedb serve``) not told otherwise.
DAEMON_SHARDS = 2


def daemon_options(given, source: str) -> dict:
    """``given`` (what a config file, ``--options`` or ``connect(path,
    start=True, **options)`` holds) checked as the options of a ``fusedb
    serve`` daemon: a mapping of Options fields but ``clock`` (a daemon's clock
    is its own), ``mode`` absent or ``"multiprocess"``, every value valid.
    Returns a copy without ``mode``, ``shards`` defaulting to DAEMON_SHARDS.
    Raises InvalidArgumentError naming ``source`` and the offending key."""
    if not isinstance(given, dict):
        raise InvalidArgumentError(f"{source}: options must be a table of names and values, "
                                   f"not {type(given).__name__}")
    check_names(given, source, {f.name for f in fields(Options)} - {"clock"})
    opts = {k: v for k, v in given.items() if k != "mode"}
    if given.get("mode", "multiprocess") != "multiprocess":
        raise InvalidArgumentError(f"{source}: a daemon runs multiprocess, not mode="
                                   f"{given['mode']!r}")
    opts.setdefault("shards", DAEMON_SHARDS)
    try:
        checked = Options(mode="multiprocess", **opts)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"{source}: {e}") from None
    if "group" in opts:
        opts["group"] = checked.group       # the gid, as a running daemon reports it
    return opts


def check_names(given: Iterable[str], source: str, names: Iterable[str] | None = None) -> None:
    """Raise UnknownOptionError (an InvalidArgumentError and a TypeError) naming
    ``source`` (e.g. ``"open()"``) if ``given`` holds a name that is not in
    ``names`` (default: the fields of Options), with the close matches of each
    and the list of valid names."""
    names = sorted({f.name for f in fields(Options)} if names is None else names)
    unknown = sorted(set(given) - set(names))
    if not unknown:
        return
    close = [m for u in unknown for m in difflib.get_close_matches(u, names, 2, 0.7)]
    hint = f" (did you mean {' or '.join(dict.fromkeys(close))}?)" if close else ""
    raise UnknownOptionError(f"{source}: unknown option(s) {', '.join(unknown)}{hint}; the "
                             f"options are {', '.join(names)}")


def group_id(group) -> int:
    """The gid of ``group``: a gid (int >= 0, or a str of digits) or a group name
    (/etc/group). InvalidArgumentError for a name no group has, or another type."""
    if isinstance(group, str) and group.isdigit():
        group = int(group)
    if isinstance(group, int) and not isinstance(group, bool) and group >= 0:
        return group
    if not isinstance(group, str):
        raise InvalidArgumentError(f"option group must be a group name or a gid, got {group!r}")
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise InvalidArgumentError(f"option group: no group is named {group!r} (see "
                                   f"/etc/group, or `getent group`); pass an existing group's "
                                   f"name or gid") from None
