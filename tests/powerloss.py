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
"""

from __future__ import annotations

import itertools
import os as real_os

MODULES = ["fusedb.fileio", "fusedb.wal.writer", "fusedb.wal.recovery", "fusedb.store"]


class SimOS:
    def __init__(self, directory: str):
        self.dir = real_os.path.realpath(directory)
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
        return getattr(real_os, name)

    def _mine(self, path: str) -> bool:
        return real_os.path.dirname(real_os.path.realpath(path)) == self.dir

    def open(self, path, flags, mode=0o777, *, dir_fd=None):
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
        self.fd_file.pop(fd, None)
        return real_os.close(fd)

    def fsync(self, fd):
        real_os.fsync(fd)
        fid = self.fd_file.get(fd)
        if fid == 0:
            self.entries = dict(self.inode)
        elif fid is not None:
            # Read through the descriptor: the name may change under another thread.
            with open(f"/proc/self/fd/{fd}", "rb") as f:
                self.content[fid] = f.read()

    def rename(self, src, dst):
        real_os.rename(src, dst)
        s, d = real_os.path.realpath(src), real_os.path.realpath(dst)
        if s in self.inode:
            self.inode[d] = self.inode.pop(s)

    def unlink(self, path):
        real_os.unlink(path)
        self.inode.pop(real_os.path.realpath(path), None)

    def power_loss(self) -> None:
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
