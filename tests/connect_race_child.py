"""A connecting process of the connect race test (tests/test_connect_race.py).

    python tests/connect_race_child.py PATH DONE

Until the file DONE exists: ``fusedb.connect(PATH)``, a get and an incr,
close; every exception is counted by class. Once DONE exists (the test
closed the database: nothing is open), three more connects, each of which
must raise NotRunningError at once. Prints one JSON object: ``ok`` (attaches
that worked), ``errors`` (class name -> count), ``raw`` (tracebacks of
exceptions that are not FuseDBError), ``gave_up`` (connects that waited for
an open in progress until their timeout), ``final`` (the class names of the
last three connects) and ``final_seconds`` (the longest of them).
"""

import json
import os
import random
import sys
import time
import traceback

import fusedb


def main() -> None:
    path, done = sys.argv[1], sys.argv[2]
    out = {"ok": 0, "errors": {}, "raw": [], "gave_up": 0, "final": [], "final_seconds": 0.0}
    deadline = time.monotonic() + 300          # bound: the test writes DONE long before
    while not os.path.exists(done) and time.monotonic() < deadline:
        try:
            db = fusedb.connect(path, timeout=30)
            try:
                db.get(b"k")
                db.incr(b"clients")
                out["ok"] += 1
            finally:
                db.close()
        except Exception as e:  # noqa: BLE001 - what the test is about
            name = type(e).__name__
            out["errors"][name] = out["errors"].get(name, 0) + 1
            out["gave_up"] += bool(getattr(e, "opening", False))
            if not isinstance(e, fusedb.FuseDBError) and len(out["raw"]) < 3:
                out["raw"].append(traceback.format_exc())
        time.sleep(random.choice((0, 0.001, 0.003)))    # a worker's retry pause
    for _ in range(3):
        t = time.monotonic()
        try:
            fusedb.connect(path, timeout=10).close()
            out["final"].append("attached")
        except Exception as e:  # noqa: BLE001
            out["final"].append(type(e).__name__)
        out["final_seconds"] = max(out["final_seconds"], time.monotonic() - t)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
