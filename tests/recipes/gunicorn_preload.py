"""gunicorn WITH --preload: the master owns the database.

    gunicorn --preload --workers 4 --bind 127.0.0.1:8000 gunicorn_preload:app

--preload imports this module once, in the gunicorn master, before it forks the
workers. ``open(shards=2)`` makes the master the database's owner (its router,
with a worker process per shard); each forked gunicorn worker inherits the handle,
which re-attaches in the worker on first use. The database lives as long as the
master: stopping gunicorn (SIGTERM) closes it, with everything merged.
"""

import fusedb
from counter import DB_PATH, wsgi_app

db = fusedb.open(DB_PATH, shards=2)
app = wsgi_app(db)
