"""A process that keeps writing to a database and flushing it until its stdin
closes, for the tests that run ``fusedb check`` against a live database.

    python live_writer.py PATH embedded|multiprocess

Prints ``R`` once the first flush has published segments and a manifest, then
writes (puts, deletes, increments) and flushes in a loop; when stdin closes it
closes the database cleanly and exits 0."""

from __future__ import annotations

import sys
import threading

import fusedb

from fusedb.testing import TINY


def main() -> int:
    path, mode = sys.argv[1], sys.argv[2]
    opts = dict(TINY, leaf_max_bytes=4000)
    db = fusedb.open(path, shards=2, **opts) if mode == "multiprocess" else \
        fusedb.open(path, **opts)
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        i = 0
        while not stop.is_set():
            key = b"k%04d" % (i * 7919 % 3000)
            if i % 11 == 0:
                db.delete(key)
            elif i % 5 == 0:
                db.incr(b"n%02d" % (i % 40))
            else:
                db.put(key, b"v%d" % i * 3)
            i += 1
            if i % 150 == 0:
                db.flush()
                if i == 150:
                    sys.stdout.write("R")
                    sys.stdout.flush()
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
