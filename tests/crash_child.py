"""Child process for the crash tests: applies the deterministic operation sequence
of tests/crash_ops.py from index START, writing each acknowledged index (4 bytes,
little-endian) to stdout, until it is killed.

    python tests/crash_child.py PATH MODE SEED START [embedded|router|client]

``router`` opens the database multiprocess (2 shards, worker processes);
``client`` attaches to one a router opened (MODE is then the router's).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import fusedb  # noqa: E402
from crash_ops import apply, op  # noqa: E402


#: The options every crash test opens its database with.
OPTIONS = dict(buffer_bytes=16384, buffer_slots=64, arena_bytes=16384 * 16,
               leaf_max_bytes=20000, max_value_size=1000)


def main() -> None:
    path, mode, seed, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    how = sys.argv[5] if len(sys.argv) > 5 else "embedded"
    if how == "client":
        db = fusedb.connect(path)
    else:
        db = fusedb.open(path, durability=mode, **OPTIONS,
                         **({"shards": 2} if how == "router" else {}))
    out = sys.stdout.buffer
    os.write(out.fileno(), b"R")          # ready: the database is open
    i = start
    while True:
        apply(db, op(seed, i))
        os.write(out.fileno(), i.to_bytes(4, "little"))
        i += 1


if __name__ == "__main__":
    main()
