"""Test hook of the worker process: ``FUSEDB_WORKER_FAILPOINTS``.

``FUSEDB_WORKER_FAILPOINTS="point=kill,point2=sleep:5"`` arms failpoints
(fusedb.core.failpoints) in every worker process it reaches: ``kill`` sends
SIGKILL to itself there; ``killonce:FILE`` does so only if FILE does not exist
yet, creating it; ``marksleep:FILE:SECONDS`` creates FILE, then sleeps;
``oserror:NAME:FILE`` raises ``OSError(errno.NAME)`` there while FILE exists;
``sleep:SECONDS`` sleeps. Called once by fusedb.worker.process's main.
"""

from __future__ import annotations

import errno
import os
import signal
import time

from fusedb.core import failpoints


def arm_from_env() -> None:
    """Arm the failpoints named in FUSEDB_WORKER_FAILPOINTS (see the module
    docstring). Raises SystemExit for an entry it does not understand."""
    spec = os.environ.get("FUSEDB_WORKER_FAILPOINTS", "")
    for item in filter(None, spec.split(",")):
        point, _, action = item.partition("=")
        if action == "kill":
            failpoints.arm(point, lambda: os.kill(os.getpid(), signal.SIGKILL))
        elif action.startswith("killonce:"):
            # Die here the first time any worker gets here (the marker file says
            # it happened), so the restarted worker goes on.
            marker = action[9:]

            def kill_once(marker=marker) -> None:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return
                os.kill(os.getpid(), signal.SIGKILL)
            failpoints.arm(point, kill_once)
        elif action.startswith("marksleep:"):
            # Create FILE (so a test knows the worker got here), then sleep.
            marker, _, secs = action[10:].rpartition(":")

            def mark_sleep(marker=marker, secs=float(secs)) -> None:
                open(marker, "a").close()
                time.sleep(secs)
            failpoints.arm(point, mark_sleep)
        elif action.startswith("oserror:"):
            # Raise OSError(errno NAME) while FILE exists (a test's "disk full"
            # switch): "oserror:ENOSPC:/path/to/marker".
            name, _, marker = action[8:].partition(":")
            no = getattr(errno, name)

            def fail_while(marker=marker, no=no) -> None:
                if os.path.exists(marker):
                    raise OSError(no, f"{os.strerror(no)} (injected)")
            failpoints.arm(point, fail_while)
        elif action.startswith("sleep:"):
            secs = float(action[6:])
            failpoints.arm(point, lambda secs=secs: time.sleep(secs))
        else:
            raise SystemExit(f"bad FUSEDB_WORKER_FAILPOINTS entry {item!r}")
