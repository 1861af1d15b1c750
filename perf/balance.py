"""How evenly the shards of a database carry its keys, bytes and writes (issue 15,
item 3: "with 4 shards and keys user:<n> plus session:<hex>, each shard within
±25 % of the mean load").

    python perf/balance.py [--shards 4] [--users N] [--sessions N]
                           [--duration S | --ops N] [--json]

Opens a database with ``shards`` (default 4) and otherwise default options in a
temporary directory, loads ``--users`` keys ``user:<n>`` (100-byte values) and
``--sessions`` keys ``session:<16 hex>`` (200-byte values), then runs a mixed
update load for ``--duration`` seconds (or ``--ops`` operations): half are
``incr`` of ``user:<n>:visits`` with n drawn from a Zipf distribution (exponent
0.99, hot users scattered over the ids), half are puts of a fresh 200-byte value
to a uniformly drawn session. Every second it samples ``stats()["shards"]`` and
prints each shard's leaves, keys, bytes and writes since open; at the end, per
shard: leaves, keys, bytes, writes during the update load, and each one's deviation from the
mean over the shards, plus the load as shard balance defines it
(fusedb.core.balance: the mean of the shard's share of bytes and of writes) and
its deviation. ``--json`` prints the samples and the summary as JSON instead.
The defaults finish in about a minute on two cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

import numpy as np

import fusedb
from fusedb.core.balance import BalancePolicy, LeafLoad, shard_loads

FIELDS = ("keys", "bytes", "writes")


def zipf_sampler(rng, n: int, exponent: float = 0.99):
    """A function drawing ``k`` user numbers in [0, n), Zipf-distributed by rank,
    ranks dealt to the ids at random (the hot users are not the lowest ids)."""
    p = 1.0 / np.arange(1, n + 1) ** exponent
    p /= p.sum()
    ids = rng.permutation(n)
    return lambda k: ids[rng.choice(n, size=k, p=p)]


def sample(db, t0: float) -> dict:
    rows = db.stats()["shards"]
    return {"t": round(time.monotonic() - t0, 2),
            "shards": [{f: r[f] for f in ("leaves", *FIELDS)} for r in rows]}


def deviations(values: list[float]) -> list[float]:
    """Each value's deviation from the mean of ``values``, a fraction of it (0 if
    the mean is 0)."""
    mean = sum(values) / len(values)
    return [(v - mean) / mean if mean else 0.0 for v in values]


def summary(first: dict, last: dict, shards: int) -> list[dict]:
    """Per shard: keys and bytes at the end, writes between the two samples, each
    one's deviation from the mean, and the balance load and its deviation."""
    rows = [{"shard": i, "leaves": b["leaves"], "keys": b["keys"], "bytes": b["bytes"],
             "writes": b["writes"] - a["writes"]}
            for i, (a, b) in enumerate(zip(first["shards"], last["shards"]))]
    for f in FIELDS:
        for r, d in zip(rows, deviations([r[f] for r in rows])):
            r[f + "_dev"] = d
    loads = shard_loads([LeafLoad(r["shard"], r["shard"], r["bytes"], r["writes"], r["keys"], True)
                         for r in rows], BalancePolicy(shards, 0, 0))
    for r, load, d in zip(rows, loads, deviations(loads)):
        r["load"], r["load_dev"] = load, d
    return rows


def run(a) -> dict:
    rng = np.random.default_rng(a.seed)
    users = zipf_sampler(rng, a.users)
    sessions = [b"session:%016x" % x for x in rng.integers(0, 1 << 63, a.sessions)]
    path = tempfile.mkdtemp(prefix="fusedb-balance-")
    samples = []
    try:
        with fusedb.open(path, shards=a.shards) as db:
            t0 = time.monotonic()
            user_value, session_value = bytes(100), bytes(200)
            for n in range(a.users):
                db.put(b"user:%d" % n, user_value)
            for key in sessions:
                db.put(key, session_value)
            loaded = sample(db, t0)
            samples.append(loaded)
            show(a, loaded)
            end = time.monotonic() + a.duration
            done, next_sample = 0, time.monotonic() + a.interval
            while (done < a.ops) if a.ops else (time.monotonic() < end):
                hot = users(1000)
                which = rng.integers(0, len(sessions), 1000)
                for n, s in zip(hot.tolist(), which.tolist()):
                    db.incr(b"user:%d:visits" % n)
                    db.put(sessions[s], rng.bytes(200))
                done += 2000
                if time.monotonic() >= next_sample:
                    samples.append(sample(db, t0))
                    show(a, samples[-1])
                    next_sample += a.interval
            samples.append(sample(db, t0))
            show(a, samples[-1])
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return {"shards": a.shards, "users": a.users, "sessions": a.sessions, "ops": done,
            "samples": samples, "summary": summary(loaded, samples[-1], a.shards)}


def show(a, s: dict) -> None:
    """One line per sample: per shard leaves, keys, MiB and writes since open."""
    if a.json:
        return
    cols = " | ".join(f"{r['leaves']:>3} leaves {r['keys']:>9,} keys "
                      f"{r['bytes'] / (1 << 20):7.1f} MiB {r['writes']:>10,} writes"
                      for r in s["shards"])
    print(f"{s['t']:7.1f}s  {cols}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--users", type=int, default=150_000)
    ap.add_argument("--sessions", type=int, default=150_000)
    ap.add_argument("--duration", type=float, default=40.0,
                    help="seconds of the mixed update load (default 40)")
    ap.add_argument("--ops", type=int, default=0,
                    help="operations of the update load instead of --duration")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print JSON (samples and summary)")
    a = ap.parse_args()
    out = run(a)
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print(f"\n{out['ops']:,} update operations; writes counted during them; "
          "dev: deviation from the mean over the shards")
    print(f"{'shard':>5} {'leaves':>6} {'keys':>10} {'dev':>7} {'bytes':>13} {'dev':>7} "
          f"{'writes':>10} {'dev':>7} {'load':>6} {'dev':>7}")
    for r in out["summary"]:
        print(f"{r['shard']:>5} {r['leaves']:>6} {r['keys']:>10,} {r['keys_dev']:>+7.0%} "
              f"{r['bytes']:>13,} {r['bytes_dev']:>+7.0%} {r['writes']:>10,} "
              f"{r['writes_dev']:>+7.0%} {r['load']:>6.3f} {r['load_dev']:>+7.0%}")


if __name__ == "__main__":
    main()
