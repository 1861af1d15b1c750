"""Child of tests/test_kernel.py's mixed-process test. Run as

    python mixed_child.py router DIR            # open with shards=2, print "ready",
                                                # close when stdin closes
    python mixed_child.py client DIR NAME N     # attach, N rounds of incr on the
                                                # shared counters and puts of its own
                                                # keys, reads back, prints JSON

Which path a child runs (compiled or pure) is the environment's
(FUSEDB_NO_EXTENSIONS); each prints it.
"""

import json
import sys

import fusedb
from fusedb.core import kernel

COUNTERS = [b"shared:%d" % i for i in range(8)]


def main() -> None:
    role, path = sys.argv[1:3]
    if role == "router":
        db = fusedb.open(path, shards=2, split_keys=("shared:4",))
        print(json.dumps({"ready": True, "compiled": kernel.COMPILED}), flush=True)
        sys.stdin.read()
        db.close()
        return
    name, n = sys.argv[3].encode(), int(sys.argv[4])
    db = fusedb.connect(path)
    try:
        for i in range(n):
            for k in COUNTERS:
                db.incr(k)
            db.put(name + b":%d" % (i % 50), b"%d" % i)
        own = {k: db.get(name + k.encode()).decode()
               for k in (f":{j}" for j in range(50))}
        print(json.dumps({"compiled": kernel.COMPILED, "own": own}), flush=True)
    finally:
        db.close()


if __name__ == "__main__":
    main()
