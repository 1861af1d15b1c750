"""What ``fusedb repair`` reports: :class:`Lost` (one part whose entries could
not all be kept) and :class:`RepairReport`, written as ``report.json`` in the
repair's ``lost/<time>/`` directory (docs/format.md, "lost/<time>/report.json")
and printed by the command."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fusedb.tools.problems import show

#: Subdirectory of the database that receives every file repair takes out.
LOST_DIR = "lost"
#: The report of one repair, inside its ``lost/<time>/`` directory.
REPORT_FILE = "report.json"


@dataclass
class Lost:
    """One part of the database whose entries could not all be kept. Made by
    the repair run (fusedb.tools.repair, one thread, holding LOCK).

    ``lo``/``hi`` bound the keys it could hold, ``[lo, hi)`` (``hi`` None: no
    upper bound); both None when unknown. ``entries`` is how many entries it
    held (None: unknown); ``verified`` says whether that count and ``claims``
    (what its damaged header says: entry count, first and last key, seqnos)
    come from verified bytes. ``restored`` counts entries of its key range
    recovered from the WAL instead."""
    file: str              # file name in the database directory
    kind: str              # "segment", "wal", "manifest" or "identity"
    problem: str           # what is wrong with it
    lo: bytes | None = None
    hi: bytes | None = None
    entries: int | None = None
    verified: bool = False
    claims: str = ""
    bytes: int = 0         # bytes of the file that could not be used
    restored: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lo"] = None if self.lo is None else self.lo.hex()
        d["hi"] = None if self.hi is None else self.hi.hex()
        return d

    def line(self) -> str:
        parts = [f"LOST {self.file}: {self.problem}"]
        if self.lo is not None:
            hi = "+inf" if self.hi is None else show(self.hi)
            parts.append(f"keys in [{show(self.lo)}, {hi})")
        if self.entries is not None:
            parts.append(f"{self.entries} entries" + ("" if self.verified else
                                                       " (its header says; unverified)"))
        elif self.kind in ("segment", "wal"):
            parts.append("entry count unknown")
        if self.claims:
            parts.append(self.claims)
        if self.bytes:
            parts.append(f"{self.bytes} bytes unusable")
        if self.restored:
            parts.append(f"{self.restored} entries of its range recovered from the WAL")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


@dataclass
class RepairReport:
    """What fusedb.tools.repair.repair found and did (made and filled by the
    repair run, returned to its caller). ``repaired`` False: nothing was damaged
    and nothing was changed (``lost`` and ``moved`` are empty)."""
    path: str
    repaired: bool = False
    lost_dir: str | None = None                         # where taken-out files went
    lost: list[Lost] = field(default_factory=list)      # what could not be kept
    moved: list[dict] = field(default_factory=list)     # {"file", "why"} per file set aside
    manifest: str = "kept"                              # how the leaf list was obtained
    leaves: int = 0                                     # leaves of the repaired database
    segments: int = 0                                   # segment files it names
    new_segments: int = 0                               # of which written by repair
    entries: int = 0                                    # entries in those segments
    wal_mutations: int = 0                              # WAL mutations that verified
    ring_bytes: int = 0                                 # salvaged from a crashed run's rings
    warnings: list[str] = field(default_factory=list)   # what cannot be guaranteed
    uncertain: list[str] = field(default_factory=list)  # keys (hex) that may be resurrected

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lost"] = [x.to_dict() for x in self.lost]
        return d

    def lines(self) -> list[str]:
        """The human-readable report (``fusedb repair`` without ``--json``)."""
        if not self.repaired:
            out = [f"{self.path}: nothing to repair (every file verifies); nothing changed"]
            if self.ring_bytes:
                out.append(f"  {self.ring_bytes} bytes of WAL left in shared memory by a "
                           f"crashed run were written to the WAL (as the next open would)")
            return out
        out = [f"{self.path}: repaired"]
        out += ["  " + x.line() for x in self.lost]
        out.append(f"  leaf list: {self.manifest}")
        out.append(f"  kept: {self.leaves} leaves, {self.segments} segments ({self.new_segments} "
                   f"written by repair), {self.entries} entries; {self.wal_mutations} WAL "
                   f"mutations verified and folded in")
        if self.ring_bytes:
            out.append(f"  {self.ring_bytes} bytes of WAL salvaged from shared memory")
        out.append(f"  set aside in {self.lost_dir}: "
                   + ", ".join(m["file"] for m in self.moved))
        out += ["  warning: " + w for w in self.warnings]
        out.append(f"  the database opens again; {REPORT_FILE} in {self.lost_dir} has this "
                   f"report; delete that directory once nothing in it is needed")
        return out
