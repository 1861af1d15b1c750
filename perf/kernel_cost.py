"""Where the time of one compiled operation goes, in one embedded process.

    python perf/kernel_cost.py [--number 300000]

Times, for a key already in the active buffer (put, get, incr) and one only in
a segment (get): the public call (``db.put`` ...), the kernel's own call with
arguments already checked (``Kernel.put`` ...), and an empty Python call
through the same kind of lambda, so the difference is the API's argument
checks (FuseDB.put) and the rest the kernel's work. Prints microseconds per
call, the best of 5 repeats. Needs the compiled kernel.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import timeit

import fusedb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--number", type=int, default=300_000)
    args = ap.parse_args()
    if not fusedb.compiled:
        raise SystemExit(f"the compiled kernel does not run here: {fusedb.kernel_reason}")
    d = tempfile.mkdtemp(prefix="fusedb-kcost-")
    db = fusedb.open(d)
    try:
        k = db._x.kernel
        value = b"v" * 100
        cold = b"key:cold"
        db.put(cold, value)
        db.flush()                      # cold now lives in a segment only
        hot = b"key:hot"
        db.put(hot, value)
        db.incr(b"key:counter")
        cases = [
            ("empty lambda", lambda: None),
            ("db.put", lambda: db.put(hot, value)),
            ("Kernel.put", lambda: k.put(hot, value, 0.0)),
            ("db.get", lambda: db.get(hot)),
            ("Kernel.get", lambda: k.get(hot)),
            ("db.incr", lambda: db.incr(b"key:counter")),
            ("Kernel.incr", lambda: k.incr(b"key:counter", 1, 0.0)),
            ("db.get (segment)", lambda: db.get(cold)),
            ("Kernel.get (segment)", lambda: k.get(cold)),
        ]
        for name, fn in cases:
            best = min(timeit.repeat(fn, number=args.number, repeat=5)) / args.number
            print(f"{name:22s} {best * 1e6:6.3f} us")
    finally:
        db.close()
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
