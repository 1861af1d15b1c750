"""Helpers shared by the disk-fault tests."""

from __future__ import annotations

import os


class Disk:
    """A failpoint action: while ``full``, raise ``OSError(no)`` (as the file
    system would) and count the hits."""

    def __init__(self, no: int):
        self.no = no
        self.full = True
        self.hits = 0

    def __call__(self) -> None:
        if self.full:
            self.hits += 1
            raise OSError(self.no, f"{os.strerror(self.no)} (injected)")
