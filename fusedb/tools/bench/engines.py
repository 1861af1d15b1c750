"""Engine adapters for ``fusedb bench``: one small class per engine, same methods.

Fair settings (written next to every result table): every engine keeps its log
on and does not fsync each write.

* fusedb     durability="interval" (fsync every 100 ms); multiprocess, one shard
             worker process per client process (merges run outside the
             client's GIL), or embedded (merges in a thread) with --embedded
* rocksdict  defaults (WAL on, no sync per write)
* lmdb       sync=False (the OS writes back; metasync left on)
* sqlite3    journal_mode=WAL, synchronous=NORMAL
* diskcache  defaults (SQLite WAL underneath)
* redis      redis-server from Debian, appendonly yes, appendfsync everysec,
             through redis-py on loopback

Multi-process runs (``--processes N``): the benchmark opens the database in its own
process (``open``), loads it, then N client processes ``attach`` to what ``share()``
returns: FuseDB clients ``fusedb.connect`` to a multiprocess database (``shards``
worker processes, pre-split with ``split_keys`` at even points of the key set the
workload writes: pre-splitting is how a user of a range-partitioned store spreads a
known key space); lmdb, sqlite3 and diskcache open the same files in each process;
Redis clients open one connection each. RocksDB opens a database in one process
only, so it has no multi-process run.

``incr`` is native where the engine has it (fusedb, sqlite UPSERT, diskcache,
redis) and a get+put read-modify-write otherwise (rocksdict, lmdb in one write
transaction). TTLs are native in fusedb, diskcache and redis; the others store
the value without one (noted in the output).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time


class Engine:
    name = "?"
    native_ttl = False
    native_incr = False
    #: The module the engine imports, and the package (pip) that provides it
    #: (None: part of FuseDB's own dependencies or of Python).
    module: str | None = None
    package: str | None = None

    def open(self, path: str, args) -> None: ...

    def load(self, keys: list[bytes], values: list[bytes]) -> None:
        """Write the initial data set (not timed). Engines with a batch path use
        it, so loading over a network or a per-statement transaction does not
        dominate the run."""
        for k, v in zip(keys, values):
            self.put(k, v)

    def share(self): return self.path
    def attach(self, info) -> None: self.open(info, None)
    def detach(self) -> None: self.close()
    def get(self, k: bytes): ...
    def put(self, k: bytes, v: bytes) -> None: ...
    def put_ttl(self, k: bytes, v: bytes, ttl: float) -> None: self.put(k, v)
    def incr(self, k: bytes) -> int: ...
    def delete(self, k: bytes) -> None: ...
    def expire(self, k: bytes, ttl: float) -> None: pass
    def close(self) -> None: ...
    def engine_bytes_written(self) -> int | None: return None
    def pids(self) -> list[int]: return [os.getpid()]

    def io_written(self) -> int:
        """Bytes this engine's processes (this one, and its servers or workers)
        have written to disk so far, from /proc/PID/io."""
        return sum(io_written(pid) for pid in self.pids())


def io_written(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class FuseDBEngine(Engine):
    name = "fusedb"
    native_ttl = native_incr = True

    def open(self, path, args):
        import fusedb
        self.path = path
        if args is None or args.embedded:
            self.db = fusedb.open(path, durability="interval")
            return
        shards = args.shards or args.processes
        # Pre-split at even points of the key set the workload writes (counters,
        # sessions and the rate limiter prefix the user key, see fusedb.tools.bench.run.drive).
        prefix = {"counters": b"c", "sessions": b"s", "ratelimit": b"rl:"}.get(
            getattr(args, "workload", ""), b"")
        kfmt = prefix + b"user%0" + str(args.key_size - 4).encode() + b"d"
        split = [kfmt % (args.keys * i // shards) for i in range(1, shards)]
        self.db = fusedb.open(path, durability="interval", shards=shards, split_keys=split,
                              pin=bool(args.pin))

    def attach(self, info):
        import fusedb
        self.db = fusedb.connect(info)

    def pids(self):
        return [os.getpid()] + [w["pid"] for w in self.db.stats()["workers"]
                                if w["pid"] != os.getpid()]

    def get(self, k): return self.db.get(k)
    def put(self, k, v): self.db.put(k, v)
    def put_ttl(self, k, v, ttl): self.db.put(k, v, ttl=ttl)
    def incr(self, k): return self.db.incr(k)
    def delete(self, k): self.db.delete(k)
    def expire(self, k, ttl): self.db.expire(k, ttl)

    def engine_bytes_written(self):
        from fusedb.wal.ring import R_WRITTEN
        s = self.db.stats()
        wal = sum(sh.ring.hdr[R_WRITTEN] for sh in self.db._store.shards)
        self.stats = s
        return s["segment_bytes_written"] + wal

    def close(self): self.db.close()


class RocksEngine(Engine):
    name = "rocksdict"
    module, package = "rocksdict", "rocksdict"

    def open(self, path, args):
        import rocksdict
        self.opts = rocksdict.Options(raw_mode=True)
        self.opts.enable_statistics()
        self.db = rocksdict.Rdict(path, self.opts)

    def get(self, k): return self.db.get(k)
    def put(self, k, v): self.db[k] = v

    def incr(self, k):
        v = self.db.get(k)
        n = (int(v) if v is not None else 0) + 1
        self.db[k] = b"%d" % n
        return n

    def delete(self, k): self.db.delete(k)

    def engine_bytes_written(self):
        stats = {}
        for line in self.opts.get_statistics().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "COUNT":
                stats[parts[0]] = int(parts[3])
        return (stats.get("rocksdb.wal.bytes", 0) + stats.get("rocksdb.flush.write.bytes", 0)
                + stats.get("rocksdb.compact.write.bytes", 0))

    def close(self): self.db.close()


class LmdbEngine(Engine):
    name = "lmdb"
    module, package = "lmdb", "lmdb"

    def open(self, path, args):
        import lmdb
        self.path = path
        self.env = lmdb.open(path, map_size=16 << 30, sync=False, writemap=False)

    def get(self, k):
        with self.env.begin() as t:
            return t.get(k)

    def put(self, k, v):
        with self.env.begin(write=True) as t:
            t.put(k, v)

    def incr(self, k):
        with self.env.begin(write=True) as t:
            v = t.get(k)
            n = (int(v) if v is not None else 0) + 1
            t.put(k, b"%d" % n)
            return n

    def delete(self, k):
        with self.env.begin(write=True) as t:
            t.delete(k)

    def close(self): self.env.close()


class SqliteEngine(Engine):
    name = "sqlite3"
    module = "sqlite3"    # of the standard library; missing in a Python built without it
    native_incr = True

    def open(self, path, args):
        import sqlite3
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.db = sqlite3.connect(os.path.join(path, "kv.db"), isolation_level=None,
                                  check_same_thread=False, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v) WITHOUT ROWID")

    def get(self, k):
        r = self.db.execute("SELECT v FROM kv WHERE k=?", (k,)).fetchone()
        return r[0] if r else None

    def put(self, k, v):
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))

    def incr(self, k):
        return self.db.execute("INSERT INTO kv VALUES (?, 1) ON CONFLICT(k) DO UPDATE SET "
                               "v = v + 1 RETURNING v", (k,)).fetchone()[0]

    def delete(self, k): self.db.execute("DELETE FROM kv WHERE k=?", (k,))

    def load(self, keys, values):
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", zip(keys, values))
        self.db.execute("COMMIT")

    def close(self): self.db.close()


class DiskcacheEngine(Engine):
    name = "diskcache"
    module, package = "diskcache", "diskcache"
    native_ttl = native_incr = True

    def open(self, path, args):
        import diskcache
        self.path = path
        self.c = diskcache.Cache(path, size_limit=1 << 40)

    def get(self, k): return self.c.get(k)
    def put(self, k, v): self.c.set(k, v)
    def put_ttl(self, k, v, ttl): self.c.set(k, v, expire=ttl)
    def incr(self, k): return self.c.incr(k)
    def delete(self, k): self.c.delete(k)
    def expire(self, k, ttl): self.c.touch(k, expire=ttl)

    def load(self, keys, values):
        with self.c.transact():
            for k, v in zip(keys, values):
                self.c.set(k, v)

    def close(self): self.c.close()


class RedisEngine(Engine):
    """Starts its own redis-server (Debian package) on a free loopback port."""
    name = "redis"
    module, package = "redis", "redis"
    native_ttl = native_incr = True
    server = shutil.which("redis-server")

    def open(self, path, args):
        import redis
        os.makedirs(path, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [self.server, "--port", str(port), "--bind", "127.0.0.1", "--dir", path,
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = port
        self.r = redis.Redis(port=port)
        for _ in range(200):
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)

    def get(self, k): return self.r.get(k)
    def put(self, k, v): self.r.set(k, v)
    def put_ttl(self, k, v, ttl): self.r.set(k, v, px=int(ttl * 1000))
    def incr(self, k): return self.r.incr(k)
    def delete(self, k): self.r.delete(k)
    def expire(self, k, ttl): self.r.pexpire(k, int(ttl * 1000))
    def pids(self): return [self.proc.pid]
    def share(self): return self.port

    def load(self, keys, values):
        for i in range(0, len(keys), 1000):
            self.r.mset(dict(zip(keys[i:i + 1000], values[i:i + 1000])))

    def attach(self, port):
        import redis
        self.r = redis.Redis(port=port)

    def detach(self): self.r.close()

    def close(self):
        self.r.close()
        self.proc.terminate()
        self.proc.wait()


class DictEngine(Engine):
    """A plain Python dict: no disk, no other process. Not a competitor: the
    ceiling any engine called from Python can reach in this harness (the cost
    of the timing loop itself plus one dict operation)."""
    name = "dict"
    native_incr = True

    def open(self, path, args):
        self.path = path
        self.d = {}

    def get(self, k): return self.d.get(k)
    def put(self, k, v): self.d[k] = v

    def incr(self, k):
        n = self.d[k] = self.d.get(k, 0) + 1
        return n

    def delete(self, k): self.d.pop(k, None)
    def close(self): self.d = {}


ENGINES = {e.name: e for e in (FuseDBEngine, RocksEngine, LmdbEngine, SqliteEngine,
                               DiskcacheEngine, RedisEngine, DictEngine)}
