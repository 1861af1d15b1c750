"""A file layer that forgets everything not fsynced, to simulate power loss.

``SimOS`` stands in for the ``os`` module inside FuseDB's modules (the test
swaps the module attribute, so pytest's own I/O is untouched). It forwards every
call to the real ``os`` and keeps a model of what the disk would hold after a
power failure:

* a file's *durable content* is its content at its last ``fsync`` (empty if never);
* a directory's *durable entries* (name -> file) are its entries at its last
  ``fsync`` of the directory; creations, renames and unlinks since then are not
  durable.

``power_loss()`` rewrites the real directory to exactly that durable state:
files not durably linked disappear, unlinked files that were durably linked come
back, and every file's content is cut back to what was last fsynced.

The power loss is atomic with respect to FuseDB's threads: every modelled call
holds ``self.lock``, and once the power is off every use of the module raises
:class:`PowerLost`, so a merge still running cannot touch the disk afterwards
(as with real power loss). Undo the install only after those threads ended.
"""

from __future__ import annotations

import itertools
import os as real_os
import threading

MODULES = ["fusedb.core.fileio", "fusedb.wal.writer", "fusedb.wal.recovery",
           "fusedb.runtime.dirlock", "fusedb.runtime.bootstrap", "fusedb.runtime.segcache",
           "fusedb.runtime.catalog", "fusedb.runtime.embedded"]


class PowerLost(BaseException):
    """Raised in any thread that touches the file layer after the power loss.
    A BaseException, so no engine code can mistake it for a disk error."""


class SimOS:
    def __init__(self, directory: str):
        self.dir = real_os.path.realpath(directory)
        self.lock = threading.Lock()
        self.dead = False
        self._ids = itertools.count(1)
        self.inode: dict[str, int] = {}        # current name -> file id
        self.fd_file: dict[int, int] = {}      # open fd -> file id
        self.content: dict[int, bytes] = {}    # file id -> durable content
        self.entries: dict[str, int] = {}      # durable name -> file id
        for name in real_os.listdir(self.dir):
            p = real_os.path.join(self.dir, name)
            if real_os.path.isfile(p):
                i = next(self._ids)
                self.inode[p] = i
                with open(p, "rb") as f:
                    self.content[i] = f.read()
                self.entries[p] = i

    def __getattr__(self, name):
        if self.dead:
            raise PowerLost(f"os.{name} after the power loss")
        return getattr(real_os, name)

    def _alive(self) -> None:
        if self.dead:
            raise PowerLost("file system call after the power loss")

    def _mine(self, path: str) -> bool:
        return real_os.path.dirname(real_os.path.realpath(path)) == self.dir

    def open(self, path, flags, mode=0o777, *, dir_fd=None):
        with self.lock:
            self._alive()
            fd = real_os.open(path, flags, mode)
            full = real_os.path.realpath(path)
            if full == self.dir:
                self.fd_file[fd] = 0                       # the directory itself
            elif self._mine(full):
                if full not in self.inode:
                    self.inode[full] = next(self._ids)
                self.fd_file[fd] = self.inode[full]
            return fd

    def close(self, fd):
        # Allowed after the power loss too, so no descriptor leaks from the test.
        with self.lock:
            self.fd_file.pop(fd, None)
            return real_os.close(fd)

    def fsync(self, fd):
        with self.lock:
            self._alive()
            real_os.fsync(fd)
            fid = self.fd_file.get(fd)
            if fid == 0:
                self.entries = dict(self.inode)
            elif fid is not None:
                # Read through the descriptor: the name may have changed.
                with open(f"/proc/self/fd/{fd}", "rb") as f:
                    self.content[fid] = f.read()

    def rename(self, src, dst):
        with self.lock:
            self._alive()
            real_os.rename(src, dst)
            s, d = real_os.path.realpath(src), real_os.path.realpath(dst)
            if s in self.inode:
                self.inode[d] = self.inode.pop(s)

    def unlink(self, path):
        with self.lock:
            self._alive()
            real_os.unlink(path)
            self.inode.pop(real_os.path.realpath(path), None)

    def power_loss(self) -> None:
        """Turn the power off: from now on the module raises PowerLost, and the
        directory holds exactly its durable state."""
        with self.lock:
            self.dead = True
            for name in real_os.listdir(self.dir):
                p = real_os.path.join(self.dir, name)
                if real_os.path.isfile(p):
                    real_os.unlink(p)
            for p, fid in self.entries.items():
                with open(p, "wb") as f:
                    f.write(self.content.get(fid, b""))


def install(directory: str):
    """Put a SimOS for ``directory`` in FuseDB's modules; returns (sim, undo)."""
    import importlib
    sim = SimOS(directory)
    mods = [importlib.import_module(m) for m in MODULES]
    for m in mods:
        m.os = sim

    def undo():
        for m in mods:
            m.os = real_os
    return sim, undo
