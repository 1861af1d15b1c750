"""Cost of each atomic command (issue 13) against a plain put, in one process.

    python perf/commands.py [--keys 1000] [--repeat 7]
    FUSEDB_NO_EXTENSIONS=1 python perf/commands.py      # the pure-Python path

An embedded database (``fusedb.open``) holding ``--keys`` values of 16 bytes and
as many counters; each command runs once on every key, ``--repeat`` times; the
table shows the best time per call in microseconds (the least disturbed by
other jobs on the machine) and its ratio to a plain ``put`` measured in the same
run, which is what compares across runs on a noisy machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import timeit

import fusedb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1000, help="keys per command (default 1000)")
    ap.add_argument("--repeat", type=int, default=7, help="timed passes (default 7)")
    a = ap.parse_args()
    where = tempfile.mkdtemp(prefix="fusedb-commands-")
    try:
        db = fusedb.open(os.path.join(where, "db"))
        keys = [b"k%06d" % i for i in range(a.keys)]
        counters = [b"c%06d" % i for i in range(a.keys)]
        v = b"v" * 16
        for k in keys:
            db.put(k, v)
        for k in counters:
            db.incr(k)
        same = lambda cur: cur        # noqa: E731 - "no change": nothing written
        new = lambda cur: v           # noqa: E731
        cases = {
            "put": lambda: [db.put(k, v) for k in keys],
            "get": lambda: [db.get(k) for k in keys],
            "incr": lambda: [db.incr(k) for k in counters],
            "incr, ttl=60 (live key)": lambda: [db.incr(k, 1, 60) for k in counters],
            "incr, xx=True (live key)": lambda: [db.incr(k, 1, xx=True) for k in counters],
            "put, nx=True (live: no write)": lambda: [db.put(k, v, nx=True) for k in keys],
            "put, xx=True, get=True": lambda: [db.put(k, v, xx=True, get=True) for k in keys],
            "getex, 60": lambda: [db.getex(k, 60) for k in keys],
            "touch, 60": lambda: [db.touch(k, 60) for k in keys],
            "update (same object: no write)": lambda: [db.update(k, same) for k in keys],
            "update (write)": lambda: [db.update(k, new) for k in keys],
        }
        best = {name: min(timeit.repeat(f, number=1, repeat=a.repeat)) / a.keys * 1e6
                for name, f in cases.items()}
        db.close()
    finally:
        shutil.rmtree(where, ignore_errors=True)
    print(f"fusedb {fusedb.__version__}, compiled={fusedb.compiled}; {a.keys} keys, "
          f"best of {a.repeat}; load average {os.getloadavg()[0]:.1f}")
    print("| command | µs per call | × put |\n|---|--:|--:|")
    for name, t in best.items():
        print(f"| {name} | {t:.2f} | {t / best['put']:.1f} |")


if __name__ == "__main__":
    main()
