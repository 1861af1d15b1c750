"""A multiprocessing pool: the parent owns the database, the pool's processes
get the handle.

    python pool_counter.py PATH [START_METHOD]

The parent opens the database with ``shards=2`` and so owns it (router, a worker
process per shard). The handle goes to the pool's processes as an argument: a
multiprocess handle pickles, and re-attaches with ``connect`` where it is
unpickled, whatever the start method ("fork", "spawn", "forkserver"). Each task
increments the counter; the parent prints how many increments the tasks made
and the counter's final value, and closes the database (everything merged).
"""

import multiprocessing
import sys

import fusedb


def work(job: tuple) -> int:
    db, times = job
    for _ in range(times):
        db.incr(b"hits")
    return times


def main() -> None:
    path = sys.argv[1]
    method = sys.argv[2] if len(sys.argv) > 2 else "spawn"
    with fusedb.open(path, shards=2) as db:
        with multiprocessing.get_context(method).Pool(4) as pool:
            done = sum(pool.map(work, [(db, 250)] * 8))
        print(done, int(db.get(b"hits")), flush=True)


if __name__ == "__main__":
    main()
