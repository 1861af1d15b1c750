"""Django's settings for the tests in this folder, without a project: used by
conftest.py (the pytest process) and child.py (the other processes)."""

from __future__ import annotations

import django
from django.conf import settings

#: The daemon's options (OPTIONS of the cache): one shard is plenty here.
OPTIONS = {"shards": 1}


def configure(location: str) -> None:
    """``settings.configure`` once per process: the default cache is a
    FuseDBCache of the database at ``location``; sessions live in it."""
    if settings.configured:
        return
    settings.configure(
        SECRET_KEY="fusedb-tests-only",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.sessions"],
        DATABASES={},
        CACHES={"default": {"BACKEND": "fusedb.django.FuseDBCache", "LOCATION": location,
                            "OPTIONS": OPTIONS}},
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
    )
    django.setup()


def location() -> str:
    """The database directory of the default cache."""
    return settings.CACHES["default"]["LOCATION"]
