"""Child for the SIGINT test: attaches to a running database and puts keys in a
loop for SECONDS while the test sends SIGINT every millisecond or so. It keeps
the default SIGINT handling (FuseDB's deferring handler replaces it at connect),
catches KeyboardInterrupt wherever it lands and goes on. Prints the number of
puts and of interrupts, then exits 0.

    python tests/sigint_child.py PATH SECONDS
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import fusedb  # noqa: E402


def main() -> None:
    path, seconds = sys.argv[1], float(sys.argv[2])
    db = fusedb.connect(path)
    end = time.monotonic() + seconds
    interrupts = 0
    i = 0
    ready = False
    while True:
        try:
            if not ready:
                # Inside the try: the first SIGINT may come right after this write.
                ready = True
                os.write(1, b"R")
            while time.monotonic() < end:
                db.put(b"%c-k%03d" % (i % 2 * 0x80 + 0x10, i % 100), b"v%d" % i)
                i += 1
            # Deferred signals may still be on their way: from here on, ignore them.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            break
        except KeyboardInterrupt:
            interrupts += 1
    db.close()
    os.write(1, b"%d %d" % (i, interrupts))


if __name__ == "__main__":
    main()
