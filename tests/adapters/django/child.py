"""Another process of the "app": ``python child.py LOCATION ACTION ARGS...``
configures Django like the tests (djangoconf) and uses the cache at LOCATION.

Actions (results as one JSON line on stdout):
- ``incr KEY N``: attach, print ``"ready"``, wait for a line on stdin, then
  ``cache.incr(KEY)`` N times; prints the list of values incr returned.
- ``session-load KEY...``: for each session KEY, its data (``{}`` if missing
  or expired) and the session key it ends with (one process for all: a
  process's start costs about a second under load).
- ``session-create JSON``: a new session holding the JSON object; its key.
"""

from __future__ import annotations

import json
import sys

import djangoconf


def main(location: str, action: str, *args: str) -> None:
    djangoconf.configure(location)
    from django.conf import settings
    from django.core.cache import cache
    from django.utils.module_loading import import_string
    store = import_string(settings.SESSION_ENGINE + ".SessionStore")
    if action == "incr":
        key, n = args[0], int(args[1])
        cache.has_key(key)                  # attach before saying ready
        print(json.dumps("ready"), flush=True)
        sys.stdin.readline()
        print(json.dumps([cache.incr(key) for _ in range(n)]), flush=True)
    elif action == "session-load":
        loaded = []
        for key in args:
            s = store(key)
            loaded.append({"data": dict(s.items()), "key": s.session_key})
        print(json.dumps(loaded), flush=True)
    elif action == "session-create":
        s = store()
        s.update(json.loads(args[0]))
        s.save()
        print(json.dumps(s.session_key), flush=True)
    else:
        raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
