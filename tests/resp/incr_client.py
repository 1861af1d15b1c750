"""A client process of tests/resp/test_faults.py: for SECONDS, INCR the key
``counter`` and SET ``last:<ID>`` to the number of its acknowledged INCRs,
through redis-py with its own retries off: an operation that fails (the
connection broke) counts as *uncertain* (it may have been applied), and the
next one reconnects (redis-py also reconnects by itself, before sending,
when it finds the connection closed). Prints one JSON line: acked (INCRs
acknowledged), uncertain, last_set (the last acknowledged SET's value),
reconnects, ok_after_error (acknowledged operations after the first error
or reconnection). It writes "R" once its
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
    connects = 0

    def on_connect(conn):
        nonlocal connects
        connects += 1
        conn.on_connect()

    r = redis.Redis(unix_socket_path=sock, protocol=3, socket_timeout=10,
                    retry=Retry(NoBackoff(), 0), redis_connect_func=on_connect)
    r.incr("counter")          # connected: ready (this one counts as acknowledged)
    acked = 1
    uncertain = last_set = ok_after_error = 0
    sys.stdout.write("R\n")
    sys.stdout.flush()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            r.incr("counter")
            acked += 1
            r.set(f"last:{cid}", acked)
            last_set = acked
            if uncertain or connects > 1:
                ok_after_error += 1
        except (redis.ConnectionError, redis.TimeoutError):
            uncertain += 1
            time.sleep(0.01)
    print(json.dumps({"acked": acked, "uncertain": uncertain, "last_set": last_set,
                      "reconnects": connects - 1, "ok_after_error": ok_after_error}))


if __name__ == "__main__":
    main()
