"""Key choosers and operation mixes for the benchmarks (fixed seed).

Zipfian follows YCSB's ZipfianGenerator (Gray et al., theta 0.99) and, as YCSB's
ScrambledZipfianGenerator does, spreads the popular items over the key space by
hashing the item number (FNV-1a 64) modulo the key count. Streams are drawn
vectorised up front so the timed loop only indexes arrays.
"""

from __future__ import annotations

import numpy as np

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


def fnv64(x: np.ndarray) -> np.ndarray:
    h = np.full(len(x), FNV_OFFSET, np.uint64)
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        for i in range(8):
            h ^= (x >> np.uint64(8 * i)) & np.uint64(0xFF)
            h *= FNV_PRIME
    return h


def zipfian(n: int, count: int, rng: np.random.Generator, theta: float = 0.99) -> np.ndarray:
    ranks = np.arange(1, n + 1, dtype=np.float64)
    zetan = float(np.sum(ranks ** -theta))
    zeta2 = 1.0 + 0.5 ** theta
    alpha = 1.0 / (1.0 - theta)
    eta = (1 - (2.0 / n) ** (1 - theta)) / (1 - zeta2 / zetan)
    u = rng.random(count)
    uz = u * zetan
    items = (n * (eta * u - eta + 1) ** alpha).astype(np.int64)
    items = np.where(uz < 1.0, 0, np.where(uz < 1.0 + 0.5 ** theta, 1, items))
    return (fnv64(np.minimum(items, n - 1)) % np.uint64(n)).astype(np.int64)


def uniform(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, count)


# name -> list of (operation, share). Operations: read, update (overwrite),
# rmw (read then write back), incr, put_ttl, delete, ratelimit (incr + expire on
# the current window's key).
MIXES = {
    "ycsb-a": [("read", 0.5), ("update", 0.5)],
    "ycsb-b": [("read", 0.95), ("update", 0.05)],
    "ycsb-f": [("read", 0.5), ("rmw", 0.5)],
    "counters": [("incr", 0.9), ("read", 0.1)],
    "sessions": [("put_ttl", 0.3), ("read", 0.6), ("delete", 0.1)],
    "ratelimit": [("ratelimit", 1.0)],
}
WRITES = {"update", "rmw", "incr", "put_ttl", "delete", "ratelimit"}


def op_stream(mix: str, count: int, rng: np.random.Generator) -> np.ndarray:
    names = [n for n, _ in MIXES[mix]]
    p = np.array([s for _, s in MIXES[mix]])
    return rng.choice(len(names), size=count, p=p / p.sum()).astype(np.int8), names
