"""Child process for the crash tests: applies the deterministic operation sequence
of tests/crash_ops.py from index START, writing each acknowledged index (4 bytes,
little-endian) to stdout, until it is killed.

    python tests/crash_child.py PATH MODE SEED START [embedded|router|client [C [N]]]

``router`` opens the database multiprocess (2 shards, worker processes);
``client`` attaches to one a router opened (MODE is then the router's). A client
given C works in its own key space (``crash_ops.op(..., client=C)``), so several
run side by side; given N > 0, once it receives SIGUSR1 it SIGKILLs itself right
after its N-th acquisition of a lock from then on, before it does anything under
it (the failpoint ``lock.acquired``: the window between taking a lock and
anything else).
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))

import fusedb  # noqa: E402
from crash_ops import apply, op  # noqa: E402
from fusedb.core import failpoints  # noqa: E402


#: The options every crash test opens its database with.
OPTIONS = dict(buffer_bytes=16384, buffer_slots=64, arena_bytes=16384 * 16,
               leaf_max_bytes=20000, max_value_size=1000)


def main() -> None:
    path, mode, seed, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    how = sys.argv[5] if len(sys.argv) > 5 else "embedded"
    client = int(sys.argv[6]) if len(sys.argv) > 6 else None
    kill_after = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    if kill_after:
        count = [-1]      # -1: not aimed yet

        def aim(_signum, _frame) -> None:
            count[0] = 0

        def die_at_nth() -> None:
            if count[0] >= 0:
                count[0] += 1
                if count[0] == kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
        signal.signal(signal.SIGUSR1, aim)
        failpoints.arm("lock.acquired", die_at_nth)
    if how == "client":
        db = fusedb.connect(path)
    else:
        db = fusedb.open(path, durability=mode, **OPTIONS,
                         **({"shards": 2} if how == "router" else {}))
    out = sys.stdout.buffer
    os.write(out.fileno(), b"R")          # ready: the database is open
    i = start
    while True:
        apply(db, op(seed, i, client))
        os.write(out.fileno(), i.to_bytes(4, "little"))
        i += 1


if __name__ == "__main__":
    main()
