"""The ``limits`` library's own Redis storage (limits 5.8.0, ``redis://`` and
``redis+unix://``, unmodified) and flask-limiter with it, against real
redis-server 7.0.15 and a FuseDB daemon with 2 server processes.

limits' Redis storage runs its Lua scripts by EVALSHA (redis-py's Script:
NOSCRIPT, then SCRIPT LOAD and EVALSHA again, possibly answered by the other
server process: the shared script store), plus GET, TTL, DEL, KEYS (in
clear_keys.lua) and PING. Both servers must give the same answers. The
moving window strategy needs Redis lists: out of scope for FuseDB, see
test_scripting.py::test_moving_window_script_needs_lists.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

limits = pytest.importorskip("limits")
flask = pytest.importorskip("flask")
flask_limiter = pytest.importorskip("flask_limiter")

from limits import parse  # noqa: E402
from limits.storage import storage_from_string  # noqa: E402
from limits.strategies import (FixedWindowRateLimiter,  # noqa: E402
                               SlidingWindowCounterRateLimiter)


@pytest.fixture(params=["redis", "fusedb", "fusedb-tcp"])
def uri(request):
    """A storage URI of each server (flushed first): unix socket, and for
    FuseDB also TCP on 127.0.0.1."""
    kind = request.param
    server = request.getfixturevalue({"redis": "redis_server", "fusedb": "fusedb_server",
                                      "fusedb-tcp": "fusedb_tcp"}[kind])
    server.client(protocol=2).flushall()
    if server.unixsocket:
        return f"redis+unix://{server.unixsocket}"
    return f"redis://127.0.0.1:{server.port}"


@pytest.fixture
def storage(uri):
    s = storage_from_string(uri)
    yield s
    s.storage.close()


@pytest.mark.parametrize("strategy", [FixedWindowRateLimiter, SlidingWindowCounterRateLimiter])
def test_hits_up_to_the_limit(storage, strategy):
    limiter = strategy(storage)
    item = parse("3/minute")
    assert [limiter.hit(item, "u1") for _ in range(4)] == [True, True, True, False]
    assert limiter.test(item, "u1") is False
    assert limiter.test(item, "u2") is True          # another identity, its own count
    stats = limiter.get_window_stats(item, "u1")
    assert stats.remaining == 0 and time.time() - 1 < stats.reset_time <= time.time() + 61
    assert limiter.hit(item, "u2", cost=3) is True and limiter.hit(item, "u2") is False
    limiter.clear(item, "u1")
    assert limiter.hit(item, "u1") is True


def test_fixed_window_expires(storage):
    limiter = FixedWindowRateLimiter(storage)
    item = parse("1/second")
    assert limiter.hit(item, "e") is True and limiter.hit(item, "e") is False
    deadline = time.monotonic() + 5
    while not limiter.hit(item, "e"):
        assert time.monotonic() < deadline, "the 1 s window did not expire"
        time.sleep(0.05)


def test_sliding_window_weights_the_previous_window(storage):
    """2/second: a full window, then halfway through the next one the
    previous window still counts about half."""
    limiter = SlidingWindowCounterRateLimiter(storage)
    item = parse("2/second")
    assert limiter.hit(item, "s") and limiter.hit(item, "s") and not limiter.hit(item, "s")
    deadline = time.monotonic() + 5
    while not limiter.hit(item, "s"):
        assert time.monotonic() < deadline, "the sliding window never let a hit in"
        time.sleep(0.05)


def test_storage_check_reset_and_counters(storage):
    assert storage.check() is True
    assert storage.incr("LIMITS:c", 60) == 1 and storage.incr("LIMITS:c", 60, amount=4) == 5
    assert storage.get("LIMITS:c") == 5
    assert 0 < storage.get_expiry("LIMITS:c") - time.time() <= 60
    FixedWindowRateLimiter(storage).hit(parse("5/minute"), "r")
    assert storage.reset() >= 2                       # clear_keys.lua: KEYS + DEL in a script
    assert storage.get("LIMITS:c") == 0


# -- flask-limiter ---------------------------------------------------------------------

def make_app(uri: str, strategy: str):
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address
    app = flask.Flask(__name__)
    limiter = Limiter(get_remote_address, app=app, storage_uri=uri, strategy=strategy)

    @app.route("/")
    @limiter.limit("2/minute")
    def index():
        return "ok"
    return app, limiter


@pytest.mark.parametrize("strategy", ["fixed-window", "sliding-window-counter"])
def test_flask_limiter(uri, strategy):
    app, limiter = make_app(uri, strategy)
    try:
        client = app.test_client()
        assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
        other = app.test_client()
        assert other.get("/", environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 200
    finally:
        limiter.reset()
        limiter.storage.storage.close()


APP = '''
import os
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

app = Flask(__name__)
limiter = Limiter(get_remote_address, app=app, storage_uri=os.environ["LIMITS_URI"],
                  strategy="sliding-window-counter")


@app.route("/")
@limiter.limit("3/minute")
def index():
    return "ok"
'''


def test_flask_limiter_under_gunicorn(uri, tmp_path):
    """A real server: gunicorn with 2 worker processes, each with its own
    limits storage (own connections), sharing the limit through the server."""
    from tests.resp.conftest import free_port
    if shutil.which("gunicorn") is None:
        pytest.skip("gunicorn is not installed")
    (tmp_path / "limited_app.py").write_text(APP)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b",
                             f"127.0.0.1:{port}", "limited_app:app"], cwd=str(tmp_path),
                            env={**os.environ, "LIMITS_URI": uri},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)

    def status() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                first = status()
                break
            except OSError:
                assert proc.poll() is None, "gunicorn exited"
                assert time.monotonic() < deadline, "gunicorn did not answer in 60 s"
                time.sleep(0.1)
        assert [first] + [status() for _ in range(5)] == [200, 200, 200, 429, 429, 429]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
