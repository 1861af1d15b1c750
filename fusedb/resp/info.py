"""INFO [section ...]: Redis's sections with FuseDB's numbers, as a verbatim
string (a bulk string in RESP2), in the ``key:value`` lines redis-py's
``info()`` parses (Redis 7.0.15 src/server.c ``genRedisInfoString``).

Sections: server, clients, memory, persistence (durability, WAL bytes,
merges, write amplification, the last merge's time), stats (operations per
second, keyspace hits and misses), replication (always a master without
replicas), shards (FuseDB: one line per shard), commandstats (calls per
command, with ``all``), keyspace. Counters are this server process's
(``Server.stats``) unless the server process publishes totals over every
server process in it (fusedb.resp.process). Keyspace hits are GET calls
plus MGET keys less misses (GET counts its misses only). The key count is a
scan, cached for ``KEYS_CACHE`` seconds, or 10 times as long as the scan
took (INFO polled every second must not scan all the time); FuseDB does not
count keys with a
TTL (``expires=0``). Inside EXEC or a script the database cannot be called
(the transaction holds its locks): memory, persistence and shards then come
from this process's last INFO, or are left out.
"""

from __future__ import annotations

import os
import platform
import time

import psutil

import fusedb
from fusedb.resp.table import command
from fusedb.resp.keys import key_range
from fusedb.resp.server_cmds import config_values, durability_of
from fusedb.resp.types import Verbatim

REDIS_VERSION = "7.0.15"
KEYS_CACHE = 1.0        # seconds
DEFAULT = ("server", "clients", "memory", "persistence", "stats", "replication", "shards",
           "keyspace")
ALL = DEFAULT[:-1] + ("commandstats", "keyspace")

_samples: dict[int, tuple[float, int, float]] = {}   # id(server) -> (t, commands, ops/s)
_keys: dict[int, tuple[float, int]] = {}     # id(server) -> (valid until, key count)


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024:
            return f"{n:.2f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n:.2f}T"


def _commands(stats) -> int:
    return stats.get("commands") or sum(v for k, v in stats.items() if k.startswith("cmd:"))


def _hits(stats) -> int:
    """Keyspace hits: GET calls and MGET keys, less misses (GET counts its
    misses only), or the ``hits`` the server process published."""
    if "hits" in stats:
        return stats["hits"]
    return stats.get("cmd:get", 0) + stats.get("mget_keys", 0) - stats.get("misses", 0)


def _ops_per_sec(server) -> int:
    """Commands per second since the previous INFO of this process (at least
    0.1 s before), as Redis's instantaneous_ops_per_sec samples."""
    if "ops_per_sec" in server.stats:
        return server.stats["ops_per_sec"]
    now, total = time.monotonic(), _commands(server.stats)
    prev = _samples.get(id(server))
    if prev is None:
        _samples[id(server)] = (now, total, 0.0)
        return 0
    t, n, rate = prev
    if now - t >= 0.1:
        rate = (total - n) / (now - t)
        _samples[id(server)] = (now, total, rate)
    return int(rate)


def key_count(ctx) -> int:
    """The number of keys (a scan: O(keys)), cached (module doc)."""
    until, n = _keys.get(id(ctx.server), (0.0, 0))
    now = time.monotonic()
    if now > until:
        n = len(key_range(ctx, None, None, None))
        took = time.monotonic() - now
        _keys[id(ctx.server)] = (now + took + max(KEYS_CACHE, 10 * took), n)
    return n


def _section(name: str, ctx, db_stats) -> list[str]:
    server, stats = ctx.server, ctx.server.stats
    config = config_values(ctx)
    if name == "server":
        up = int(time.time() - server.started)
        return [f"redis_version:{REDIS_VERSION}", "redis_mode:standalone",
                f"fusedb_version:{fusedb.__version__}",
                f"os:{platform.system()} {platform.release()} {platform.machine()}",
                "arch_bits:64", f"process_id:{os.getpid()}",
                f"server_processes:{server.servers}", f"server_index:{server.index}",
                f"tcp_port:{config.get('port', '0')}", f"uptime_in_seconds:{up}",
                f"uptime_in_days:{up // 86400}", f"executable:{fusedb.__file__}"]
    if name == "clients":
        return [f"connected_clients:{stats.get('connected') or len(server.clients)}",
                f"maxclients:{config.get('maxclients')}", "blocked_clients:0"]
    if name == "memory":
        rss = psutil.Process().memory_info().rss
        workers = sum(w.get("rss_bytes", 0) for w in db_stats["workers"])
        slab = (db_stats["arena_slabs_total"] and
                db_stats["arena_slabs_used"] / db_stats["arena_slabs_total"])
        return [f"used_memory:{rss}", f"used_memory_human:{_human(rss)}",
                f"used_memory_rss:{rss}", f"used_memory_rss_human:{_human(rss)}",
                f"fusedb_workers_rss:{workers}", f"fusedb_arena_slabs_used:"
                f"{db_stats['arena_slabs_used']}", f"fusedb_arena_slabs_total:"
                f"{db_stats['arena_slabs_total']}", f"fusedb_arena_fill:{slab:.4f}",
                "maxmemory:0", "maxmemory_policy:noeviction"]
    if name == "persistence":
        try:
            last_merge = int(os.stat(os.path.join(ctx.db.path, "MANIFEST")).st_mtime)
        except OSError:
            last_merge = 0
        durability = server.config.get("durability") or durability_of(ctx.db)
        return ["loading:0", "async_loading:0", "rdb_changes_since_last_save:0",
                "rdb_bgsave_in_progress:0", "rdb_last_bgsave_status:ok",
                f"aof_enabled:{int(durability != 'none')}", "aof_rewrite_in_progress:0",
                "aof_last_write_status:ok", f"fusedb_durability:{durability}",
                f"fusedb_wal_bytes:{db_stats['wal_bytes']}",
                f"fusedb_merges:{db_stats['merges']}", f"fusedb_splits:{db_stats['splits']}",
                f"fusedb_segments:{db_stats['segments']}",
                f"fusedb_segment_bytes:{db_stats['segment_bytes']}",
                f"fusedb_write_amplification:{db_stats['write_amplification']:.3f}",
                f"fusedb_last_merge_time:{last_merge}"]
    if name == "stats":
        return [f"total_connections_received:{stats.get('connections', 0)}",
                f"total_commands_processed:{_commands(stats)}",
                f"instantaneous_ops_per_sec:{_ops_per_sec(server)}",
                f"total_net_input_bytes:{stats.get('net_in', 0)}",
                f"total_net_output_bytes:{stats.get('net_out', 0)}",
                f"rejected_connections:{stats.get('rejected', 0)}",
                "expired_keys:0", "evicted_keys:0",
                f"keyspace_hits:{_hits(stats)}",
                f"keyspace_misses:{stats.get('misses', 0)}"]
    if name == "replication":
        return ["role:master", "connected_slaves:0"]
    if name == "shards":
        lines = [f"shards:{len(db_stats['shards'])}", f"leaves:{db_stats['leaves']}"]
        workers = {w["shard"]: w for w in db_stats["workers"]}
        for s in db_stats["shards"]:
            w = workers.get(s["shard"], {})
            lines.append(
                f"shard{s['shard']}:slabs_total={s['slabs_total']},"
                f"slabs_free={s['slabs_free']},wal_bytes={s['wal_bytes']},"
                f"worker_pid={w.get('pid') or 0},"
                f"cpu_seconds={w.get('cpu_seconds', 0.0):.2f},"
                f"rss_bytes={w.get('rss_bytes', 0)}")
        return lines
    if name == "commandstats":
        return [f"cmdstat_{k[4:]}:calls={v},usec=0,usec_per_call=0.00,rejected_calls=0,"
                f"failed_calls=0" for k, v in sorted(stats.items()) if k.startswith("cmd:")]
    if name == "keyspace":
        n = key_count(ctx)
        return [f"db0:keys={n},expires=0,avg_ttl=0"] if n else []
    return []


_TITLES = {"commandstats": "Commandstats"}
_NEED_STATS = {"memory", "persistence", "shards"}
_stats_cache: dict[int, dict] = {}      # id(server) -> the last db.stats()


def _db_stats(ctx) -> dict | None:
    """``db.stats()``; inside EXEC or a script (whose transaction holds shard
    locks, so the database must not be called) the last one this process
    took, or None (the sections needing it are left out)."""
    if ctx.store is ctx.db:
        _stats_cache[id(ctx.server)] = ctx.db.stats()
    return _stats_cache.get(id(ctx.server))


def info_text(ctx, sections: list[str]) -> bytes:
    """The INFO text for ``sections`` (lowercase names; empty: the default
    set; "all" / "everything" / "default" as Redis)."""
    if not sections or sections == ["default"]:
        names = DEFAULT
    elif "all" in sections or "everything" in sections:
        names = ALL
    else:
        names = [n for n in ALL if n in sections]
    db_stats = None
    if _NEED_STATS & set(names):
        db_stats = _db_stats(ctx)
        if db_stats is None:
            names = [n for n in names if n not in _NEED_STATS]
    parts = []
    for name in names:
        lines = _section(name, ctx, db_stats)
        title = _TITLES.get(name, name.capitalize())
        parts.append(f"# {title}\r\n" + "".join(line + "\r\n" for line in lines))
    return "\r\n".join(parts).encode()


@command("info", -1, "")
def info(ctx, argv):
    return Verbatim(info_text(ctx, [a.decode("latin-1").lower() for a in argv[1:]]))
