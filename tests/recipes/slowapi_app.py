"""A Starlette app whose route is rate-limited by slowapi, the limit's state shared
by every worker process through one ``fusedb://`` storage.

    FUSEDB_URI=fusedb:///abs/path/to/db STRATEGY=fixed-window \\
        uvicorn --workers 2 --host 127.0.0.1 --port 8000 slowapi_app:app

``import fusedb.limits`` registers the ``fusedb`` scheme with ``limits``, which slowapi
uses (its synchronous strategies). ``uvicorn --workers N`` spawns N fresh processes,
each importing this module and attaching to the daemon of the path (starting it when
none runs). Stop the daemon with ``fusedb stop PATH``.

Environment and routes as tests/recipes/flask_limited.py (LIMIT default ``50/hour``).
"""

import os

from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import fusedb.limits  # noqa: F401  (registers the fusedb:// storage scheme)

limiter = Limiter(key_func=get_remote_address, storage_uri=os.environ["FUSEDB_URI"],
                  strategy=os.environ["STRATEGY"])


async def pid(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


@limiter.limit(os.environ.get("LIMIT", "50/hour"))
async def hit(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


async def refused(request: Request, exc: RateLimitExceeded) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()), status_code=429)


app = Starlette(routes=[Route("/pid", pid), Route("/hit", hit)],
                exception_handlers={RateLimitExceeded: refused})
app.state.limiter = limiter
