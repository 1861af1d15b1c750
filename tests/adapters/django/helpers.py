"""Helpers of this folder's tests: the other processes (child.py) and a raw
FuseDB handle on the cache's database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import fusedb

from adapters.django import djangoconf

CHILD = Path(__file__).resolve().parent / "child.py"
ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 120.0     # seconds any child process may take


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def child_cmd(action: str, *args: str) -> list[str]:
    return [sys.executable, str(CHILD), djangoconf.location(), action, *args]


def run_child(action: str, *args: str):
    """Run child.py's ``action`` to its end; its JSON result."""
    done = subprocess.run(child_cmd(action, *args), capture_output=True, text=True,
                          timeout=TIMEOUT, env=child_env())
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@contextmanager
def raw_db():
    """A plain FuseDB handle on the cache's database (attached to its daemon,
    started if none runs yet, as the cache would)."""
    db = fusedb.connect(djangoconf.location(), start=True, **djangoconf.OPTIONS)
    try:
        yield db
    finally:
        db.close()
