"""A client process of tests/resp/test_faults.py: for SECONDS, INCR the key
``counter`` and SET ``last:<ID>`` to the number of its acknowledged INCRs,
through redis-py with its own retries off: an operation that fails (the
connection broke) counts as *uncertain* (it may have been applied), and the
next one reconnects. Prints one JSON line: acked (INCRs acknowledged),
uncertain, last_set (the last acknowledged SET's value), ok_after_error
(acknowledged operations after the first error). It writes "R" once its
first INCR is acknowledged (it is connected)."""

from __future__ import annotations

import json
import sys
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def main() -> None:
    sock, seconds, cid = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    r = redis.Redis(unix_socket_path=sock, protocol=3, socket_timeout=10,
                    retry=Retry(NoBackoff(), 0))
    r.incr("counter")          # connected: ready (this one counts as acknowledged)
    acked = 1
    uncertain = last_set = ok_after_error = 0
    erred = False
    sys.stdout.write("R\n")
    sys.stdout.flush()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            r.incr("counter")
            acked += 1
            r.set(f"last:{cid}", acked)
            last_set = acked
            if erred:
                ok_after_error += 1
        except (redis.ConnectionError, redis.TimeoutError):
            uncertain += 1
            erred = True
            time.sleep(0.01)
    print(json.dumps({"acked": acked, "uncertain": uncertain, "last_set": last_set,
                      "ok_after_error": ok_after_error}))


if __name__ == "__main__":
    main()
