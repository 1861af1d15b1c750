"""uvicorn with worker processes: a daemon owns the database, every worker attaches.

    uvicorn --workers 2 --host 127.0.0.1 --port 8000 asgi_workers:app

``uvicorn --workers N`` starts N fresh ("spawn") processes, each importing this
module; the supervising process never imports it. As with gunicorn without
--preload, each worker attaches to the daemon ``fusedb serve``, which
``start=True`` starts when none runs. Stop the daemon with ``fusedb stop PATH``.
"""

import fusedb
from counter import DB_PATH, asgi_app

db = fusedb.connect(DB_PATH, start=True, shards=2)
app = asgi_app(db)
