"""A process of the daemon start-race test (tests/test_daemon.py).

    python tests/daemon_child.py PATH AT N

Waits until unix time AT (so that every process of the race starts at the same
instant), calls ``fusedb.connect(PATH, start=True, shards=2)``, increments the
counter ``c`` N times, prints the pid of the daemon it attached to and exits 0.
"""

import sys
import time

import fusedb
from fusedb.tools.control import owner


def main() -> None:
    path, at, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    time.sleep(max(0.0, at - time.time()))
    db = fusedb.connect(path, start=True, shards=2)
    try:
        for _ in range(n):
            db.incr(b"c")
        # The daemon records its pid just after its open, and a client may attach
        # in between (once the open is complete): wait for it, bounded.
        deadline = time.monotonic() + 30
        while not owner(path)[1] and time.monotonic() < deadline:
            time.sleep(0.01)
        print(owner(path)[1], flush=True)
    finally:
        db.close()


if __name__ == "__main__":
    main()
