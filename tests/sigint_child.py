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


def put_until(db, end: float, st: dict) -> None:
    """Put keys until ``end``, counting the KeyboardInterrupts caught here."""
    while True:
        try:
            if not st["ready"]:
                # Inside the try: the first SIGINT may come right after this write.
                st["ready"] = True
                os.write(1, b"R")
            while time.monotonic() < end:
                i = st["i"]
                db.put(b"%c-k%03d" % (i % 2 * 0x80 + 0x10, i % 100), b"v%d" % i)
                st["i"] = i + 1
            # Deferred signals may still be on their way: from here on, ignore them.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return
        except KeyboardInterrupt:
            st["interrupts"] += 1


def main() -> None:
    path, seconds = sys.argv[1], float(sys.argv[2])
    db = fusedb.connect(path)
    end = time.monotonic() + seconds
    st = {"i": 0, "interrupts": 0, "ready": False}
    # Python acts on a pending signal at a loop's back edge, which lies outside
    # the try of the loop it closes: a SIGINT arriving while the except clause
    # above runs is raised there, out of put_until. This loop catches that one
    # (it would need yet another SIGINT inside its own except clause to escape).
    while True:
        try:
            put_until(db, end, st)
            break
        except KeyboardInterrupt:
            st["interrupts"] += 1
    db.close()
    os.write(1, b"%d %d" % (st["i"], st["interrupts"]))


if __name__ == "__main__":
    main()
