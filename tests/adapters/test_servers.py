"""Rate limits enforced exactly by real servers whose worker processes share one
``fusedb://`` storage (issue 13): a Flask app with flask-limiter under gunicorn with
4 workers (without and with --preload, workers recycled by --max-requests), and a
Starlette app with slowapi under uvicorn with 2 workers.

Each test starts a fresh database path; the first worker that makes the storage
starts the daemon (``connect(start=True)``), the others attach. 200 requests from
8 client threads on 127.0.0.1 against a "50 per hour" limit must be answered by
exactly 50 × 200 and 150 × 429, by more than one worker process, for each strategy
of ``limits``; the daemon must still run when the server has stopped:

- fixed window: one atomic ``incr`` per hit; its window starts at the first hit.
- moving window: one atomic ``update`` of the window's timestamps per hit.
- sliding window counter: ``limits`` checks, increments, and reverts an increment
  that went over (limits/storage/memory.py and our storage alike). Within one
  window and with an empty previous window that is still exact: the increments
  hand out distinct counts, those ≤ 50 are admitted, and a count above 50 exists
  only once 50 were handed out. Its windows are aligned to the clock
  (``sliding_window_keys``: hour number of ``time.time()``), so the test waits
  until no hour boundary can fall inside it.

Servers are stopped by their pid, the daemon with ``fusedb stop PATH``, also when
a test fails (tests/http_helpers.py). The apps are tests/recipes/flask_limited.py
and tests/recipes/slowapi_app.py.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from http_helpers import (daemon_stopped_after, free_port, fusedb_cli, gunicorn, hammer,
                          http_server, recipe_env, wait_for_workers)

LIMIT = 50          # the apps' default limit: "50 per hour"
PERIOD = 3600.0     # seconds
REQUESTS = 200
THREADS = 8
STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]
MARGIN = 30.0       # seconds a test may take from its first to its last hit


def clear_of_window_edge(strategy: str) -> None:
    """For the sliding window counter, sleep (at most MARGIN seconds) past the next
    hour boundary if it is less than MARGIN seconds away."""
    left = PERIOD - time.time() % PERIOD
    if strategy == "sliding-window-counter" and left < MARGIN:
        time.sleep(left + 0.1)


def assert_enforced(responses: list[tuple[int, bytes]]) -> None:
    """Exactly LIMIT admitted, the rest refused, answered by several workers."""
    statuses = Counter(status for status, _ in responses)
    assert statuses == {200: LIMIT, 429: REQUESTS - LIMIT}
    assert len({body for _, body in responses}) >= 2, "a single worker answered"


def run_limited(tmp_path: Path, cmd: list[str], port: int, strategy: str,
                workers: int) -> None:
    """Serve ``cmd`` with a fusedb:// storage on a fresh path, send the load, check
    the counts; stop the server, then the daemon its workers started (which must
    have outlived the server)."""
    db = tmp_path / "db"
    with daemon_stopped_after(db):
        serve_and_check(tmp_path, cmd, port, strategy, workers, f"fusedb://{db}")
        stopped = fusedb_cli("stop", db)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def serve_and_check(tmp_path: Path, cmd: list[str], port: int, strategy: str,
                    workers: int, uri: str) -> None:
    """Serve ``cmd`` with the storage ``uri``; once each of its ``workers`` answered,
    send the load and check the counts."""
    env = recipe_env(tmp_path / "db", FUSEDB_URI=uri, STRATEGY=strategy)
    with http_server(cmd, env, port, tmp_path / "server.log"):
        wait_for_workers(port, workers)
        clear_of_window_edge(strategy)
        assert_enforced(hammer(port, REQUESTS, THREADS, path="/hit"))


# Workers recycled by --max-requests (a test sends about 250 requests, /pid probes
# included): without --preload each new worker imports the app and attaches anew
# (60: 3 or 4 replaced, each import costs about a second of CPU); with --preload
# the master made the storage before forking, and each forked worker (40: about 5
# forked) re-attaches on first use.
GUNICORN_MODES = {
    "workers": ["--max-requests", "60"],
    "preload": ["--preload", "--max-requests", "40"],
}


@pytest.mark.parametrize("mode", GUNICORN_MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_flask_limiter_under_gunicorn(tmp_path, strategy, mode):
    port = free_port()
    cmd = gunicorn(port, "flask_limited:app", "--workers", "4", *GUNICORN_MODES[mode])
    run_limited(tmp_path, cmd, port, strategy, 4)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_slowapi_under_uvicorn(tmp_path, strategy):
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "2", "--no-access-log", "slowapi_app:app"]
    run_limited(tmp_path, cmd, port, strategy, 2)
