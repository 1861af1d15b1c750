"""A Flask app whose route is rate-limited by flask-limiter, the limit's state shared
by every worker process through one ``fusedb://`` storage.

    FUSEDB_URI=fusedb:///abs/path/to/db STRATEGY=moving-window \\
        gunicorn --workers 4 --bind 127.0.0.1:8000 flask_limited:app

``import fusedb.limits`` registers the ``fusedb`` scheme with ``limits``; from then on
the URI works unmodified in flask-limiter. Each process that makes the storage attaches
to the daemon of that path, starting it when none runs (``connect(start=True)``);
with ``--preload`` that is the master, and the workers it forks re-attach on first
use. The daemon outlives gunicorn: stop it with ``fusedb stop PATH``.

Environment: FUSEDB_URI (any ``limits`` storage URI), STRATEGY (``fixed-window``,
``moving-window`` or ``sliding-window-counter``), LIMIT (default ``50 per hour``).
Routes: ``/hit`` (limited: 200, or 429 when refused; the body is the pid of the
worker that answered) and ``/pid`` (not limited: the server's readiness probe).
"""

import os

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

import fusedb.limits  # noqa: F401  (registers the fusedb:// storage scheme)

app = Flask(__name__)
limiter = Limiter(get_remote_address, app=app, storage_uri=os.environ["FUSEDB_URI"],
                  strategy=os.environ["STRATEGY"])


@app.route("/pid")
def pid() -> str:
    return str(os.getpid())


@app.errorhandler(429)
def refused(error) -> tuple[str, int]:
    return str(os.getpid()), 429


@app.route("/hit")
@limiter.limit(os.environ.get("LIMIT", "50 per hour"))
def hit() -> str:
    return str(os.getpid())
