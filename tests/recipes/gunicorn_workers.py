"""gunicorn WITHOUT --preload: a daemon owns the database, every worker attaches.

    gunicorn --workers 4 --max-requests 50 --bind 127.0.0.1:8000 gunicorn_workers:app

Without --preload each gunicorn worker imports this module itself, after the fork,
and workers come and go (--max-requests recycles them). No worker may own the
database (``open`` would raise LockedError in all workers but one, and the
database would close with the worker that happened to own it), so each worker
attaches to the daemon ``fusedb serve``; ``start=True`` starts that daemon,
detached, when none runs yet (exactly one, whatever the number of workers racing
to start it). The daemon outlives gunicorn: stop it with ``fusedb stop PATH``.
The same module works with --preload: the master attaches (starting the daemon)
and the workers it forks re-attach on first use.
"""

import fusedb
from counter import DB_PATH, wsgi_app

db = fusedb.connect(DB_PATH, start=True, shards=2)
app = wsgi_app(db)
