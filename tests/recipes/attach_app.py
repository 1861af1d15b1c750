"""An application process attaching to a running daemon (``fusedb serve``, e.g.
under systemd):

    python attach_app.py PATH INCREMENTS

``connect(PATH)`` attaches (NotRunningError when no daemon runs: it starts none);
the process increments the counter, prints the value it last saw and detaches.
"""

import sys

import fusedb


def main() -> None:
    path, increments = sys.argv[1], int(sys.argv[2])
    with fusedb.connect(path) as db:
        last = 0
        for _ in range(increments):
            last = db.incr(b"hits")
        print(last, flush=True)


if __name__ == "__main__":
    main()
