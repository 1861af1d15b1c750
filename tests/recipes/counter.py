"""The recipes' application: a hit counter over FuseDB, served over HTTP.

GET /incr increments the counter ``b"hits"`` and answers its new value, GET /get
answers its value (0 when missing), GET /pid the pid of the process that
answered. Every recipe serves this same logic; only where the database handle
comes from differs (see docs/recipes.md). The database directory is the
environment variable FUSEDB_RECIPE_PATH.
"""

from __future__ import annotations

import os

DB_PATH = os.environ.get("FUSEDB_RECIPE_PATH", "fusedb-data")
KEY = b"hits"


def answer(db, path: str) -> tuple[int, bytes]:
    """(HTTP status, body) for a request of ``path`` served on handle ``db``."""
    if path == "/incr":
        return 200, str(db.incr(KEY)).encode()
    if path == "/get":
        return 200, db.get(KEY) or b"0"
    if path == "/pid":
        return 200, str(os.getpid()).encode()
    return 404, b"not found"


def wsgi_app(db):
    """A plain WSGI application (PEP 3333) serving :func:`answer` on ``db``."""
    def app(environ, start_response):
        status, body = answer(db, environ.get("PATH_INFO", "/"))
        start_response(f"{status} {'OK' if status == 200 else 'Not Found'}",
                       [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app


def asgi_app(db):
    """A plain ASGI 3 HTTP application serving :func:`answer` on ``db``. A FuseDB
    call takes microseconds and never blocks on I/O, so it runs on the event loop."""
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":     # nothing to set up or tear down
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        status, body = answer(db, scope["path"])
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    return app
