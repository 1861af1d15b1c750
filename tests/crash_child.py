"""Child process for the crash tests: applies the deterministic operation sequence
of tests/crash_ops.py from index START, writing each acknowledged index (4 bytes,
little-endian) to stdout, until it is killed.

    python tests/crash_child.py PATH MODE SEED START
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import fusedb  # noqa: E402
from crash_ops import apply, op  # noqa: E402


def main() -> None:
    path, mode, seed, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    db = fusedb.open(path, durability=mode, buffer_bytes=16384, buffer_slots=64,
                     arena_bytes=16384 * 16, leaf_max_bytes=20000, max_value_size=1000)
    out = sys.stdout.buffer
    os.write(out.fileno(), b"R")          # ready: the database is open
    i = start
    while True:
        apply(db, op(seed, i))
        os.write(out.fileno(), i.to_bytes(4, "little"))
        i += 1


if __name__ == "__main__":
    main()
