"""Process-wide side effects (fusedb.runtime.hooks) are registered by the entry
points, not by importing fusedb."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_import_registers_nothing_open_does(tmp_path):
    code = textwrap.dedent(f"""
        import atexit, signal
        import logging, numpy, posix_ipc, psutil, xxhash    # (logging registers its own)
        before = atexit._ncallbacks(), signal.getsignal(signal.SIGINT)
        import fusedb
        assert (atexit._ncallbacks(), signal.getsignal(signal.SIGINT)) == before, "import"
        db = fusedb.open({str(tmp_path / "db")!r})
        assert atexit._ncallbacks() == before[0] + 1
        assert signal.getsignal(signal.SIGINT) is not before[1]
        db.close()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ), timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
