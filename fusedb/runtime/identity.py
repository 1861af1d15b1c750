"""The identity file ``FUSEDB``: what makes a directory a FuseDB database, and the
record of the options that shape its layout.

A database directory holds the file ``FUSEDB`` (docs/format.md, "Other files in
the directory"), one JSON object::

    {"checksum": "<16 hex digits>", "created": 1718000000.25, "format": "fusedb",
     "layout": {"max_key_size": 512, "max_value_size": 16384}, "version": 1}

``checksum`` is the xxh3_64 (hex) of the canonical JSON of the other four fields
(keys sorted, no spaces), so a flipped byte is found, not believed.

*Identity* (invariant 8, only our own files): ``open`` refuses a non-empty
directory unless it is FuseDB's (:func:`check_directory`), so it never adopts a
project directory and deletes files in it. A directory of an earlier FuseDB
version (a ``MANIFEST`` or WAL file of FuseDB's, no ``FUSEDB``) is adopted:
``open`` writes its identity file.

*Layout*: ``layout`` holds the longest key and value the database may hold: an
upper bound of what its files hold, and the limits of the run that has it open.
Entries that long may be stored whatever a later open asks for, so they size
what must hold any stored key or entry: the routing table's bound slots (a split
may pick any stored key as a bound), a buffer's heap and the WAL ring (an
``expire`` rewrites a stored entry through both). A reopen with smaller limits
applies them to new writes only; see :func:`reconcile`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import xxhash

from fusedb.errors import CorruptionError, InvalidArgumentError, NotADatabaseError
from fusedb.core.fileio import publish, read_if_exists
from fusedb.core.manifest import FILE as MANIFEST_FILE, MAGIC as MANIFEST_MAGIC
from fusedb.options import Options
from fusedb.wal.format import MAGIC as WAL_MAGIC, parse_file_name as parse_wal_name

IDENTITY_FILE = "FUSEDB"
FORMAT = "fusedb"
VERSION = 1
#: The options recorded in ``layout``: each is the largest value ever opened with.
LAYOUT_OPTIONS = ("max_key_size", "max_value_size")
#: The (always empty) file ``open`` flocks; a directory holding only it is empty.
LOCK_FILE = "LOCK"
#: The log of a ``fusedb serve --detach`` daemon (fusedb.tools.serve), written
#: from before the database is created: a directory holding only it (and LOCK)
#: is empty too.
SERVE_LOG = "serve.log"


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def read(path: str) -> dict | None:
    """The identity record of database directory ``path``: a dict with ``format``
    (str), ``version`` (int), ``created`` (float, Unix seconds) and ``layout``
    (dict of :data:`LAYOUT_OPTIONS`, bytes). None when there is no ``FUSEDB``
    file. Raises CorruptionError (``.path``, ``.offset`` 0) when the file is
    present but damaged: not JSON, fields missing or of the wrong type, checksum
    mismatch, another format, or an unknown version."""
    fp = os.path.join(path, IDENTITY_FILE)
    raw = read_if_exists(fp)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        ok = (isinstance(doc, dict) and isinstance(doc.get("checksum"), str)
              and isinstance(doc.get("layout"), dict)
              and all(_positive_int(doc["layout"].get(k)) for k in LAYOUT_OPTIONS)
              and isinstance(doc.get("created"), (int, float))
              and isinstance(doc.get("version"), int))
    except ValueError:      # not UTF-8 or not JSON
        ok = False
    if not ok:
        raise CorruptionError(f"identity file damaged (not the JSON object FuseDB writes) at "
                              f"offset 0: {fp}", fp, 0)
    body = {k: v for k, v in doc.items() if k != "checksum"}
    if xxhash.xxh3_64_hexdigest(_canonical(body)) != doc["checksum"]:
        raise CorruptionError(f"identity file checksum mismatch at offset 0: {fp}", fp, 0)
    if doc.get("format") != FORMAT or doc["version"] != VERSION:
        raise CorruptionError(f"identity file of an unknown format {doc.get('format')!r} "
                              f"version {doc['version']} at offset 0: {fp}", fp, 0)
    return body


def write(path: str, layout: dict) -> None:
    """Write (or replace) the identity file of directory ``path`` recording
    ``layout`` (ints of :data:`LAYOUT_OPTIONS`, bytes), atomically and durably
    (temp, fsync, rename, directory fsync: fusedb.core.fileio.publish). The creation
    time of a readable existing file is kept; otherwise it is now. Raises
    InvalidArgumentError for a layout missing an option; OSError if the file
    cannot be written."""
    if set(layout) != set(LAYOUT_OPTIONS) or not all(_positive_int(v) for v in layout.values()):
        raise InvalidArgumentError(f"a layout has positive ints {LAYOUT_OPTIONS}, got {layout!r}")
    try:
        old = read(path)
    except CorruptionError:
        old = None          # being rewritten (fusedb repair)
    doc = {"format": FORMAT, "version": VERSION,
           "created": old["created"] if old else time.time(), "layout": dict(layout)}
    doc["checksum"] = xxhash.xxh3_64_hexdigest(_canonical(doc))
    publish(os.path.join(path, IDENTITY_FILE),
            [json.dumps(doc, sort_keys=True, indent=1).encode(), b"\n"])


def layout_of(opts: Options) -> dict:
    """The layout record of ``opts`` (a new database's)."""
    return {k: getattr(opts, k) for k in LAYOUT_OPTIONS}


def _larger(a: dict, b: dict) -> dict:
    return {k: max(int(a[k]), int(b[k])) for k in LAYOUT_OPTIONS}


def _check(opts: Options, layout: dict) -> None:
    """The size checks of fusedb.options.Options, rerun with ``layout``'s limits
    (a buffer's heap and the WAL ring must hold the largest entry)."""
    dataclasses.replace(opts, **layout)


def reconcile(recorded: dict | None, opts: Options, stored: Callable[[], dict]) -> dict:
    """The layout to record when ``opts`` open a database whose identity file
    records ``recorded`` (None: a new database or one of an earlier version):
    per option the larger of the recorded and the requested value.

    ``stored()`` returns the longest key and value the database's files hold
    (a dict like a layout; they are measured, at a cost of one pass over the
    segments, only for a database with no record, or when the recorded values
    are more than ``opts``' buffers or WAL ring can hold: then the larger of the
    measured and the requested values is recorded instead, since only what is
    stored must fit). ``opts`` stay the limits for new writes; the result sizes
    what must hold any stored key or entry. Raises InvalidArgumentError, naming
    the stored and recorded values, when ``opts``' buffers or WAL ring cannot
    hold the longest entry the database holds."""
    want = layout_of(opts)
    if recorded is not None:
        layout = _larger(recorded, want)
        try:
            _check(opts, layout)
            return layout
        except InvalidArgumentError:
            pass    # measure what is stored: only that must fit
    held = stored()
    layout = _larger(held, want)
    try:
        _check(opts, layout)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(
            f"this database holds keys of up to {held['max_key_size']} bytes and values of "
            f"up to {held['max_value_size']} bytes"
            + (f" (its {IDENTITY_FILE} file records max_key_size={recorded['max_key_size']}, "
               f"max_value_size={recorded['max_value_size']})" if recorded else "")
            + f", and these options cannot hold them: {e}") from None
    return layout


def _is_ours(path: str, name: str) -> bool:
    """Whether ``name`` in ``path`` is a MANIFEST or WAL file FuseDB wrote (by its
    name and its first bytes; a WAL file torn before its header was complete
    holds a prefix of the magic)."""
    if name == MANIFEST_FILE:
        magic = MANIFEST_MAGIC
    elif parse_wal_name(name) is not None:
        magic = WAL_MAGIC
    else:
        return False
    try:
        with open(os.path.join(path, name), "rb") as f:
            head = f.read(len(magic))
    except (IsADirectoryError, PermissionError):
        return False
    return head == magic or (magic is WAL_MAGIC and magic.startswith(head))


def check_directory(path: str) -> str:
    """Decide whether ``open`` may use directory ``path``; changes nothing.

    Returns ``"new"`` (missing, or empty but for an empty ``LOCK`` file and a
    daemon's ``serve.log``: a new
    database is created), ``"ours"`` (it has an identity file, which is checked:
    CorruptionError if damaged) or ``"adopt"`` (a database of an earlier FuseDB
    version: its ``MANIFEST`` or a WAL file is FuseDB's; ``open`` writes the
    identity file). Raises NotADatabaseError for any other directory, and
    NotADirectoryError if ``path`` is a file."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return "new"
    if IDENTITY_FILE in names:
        read(path)
        return "ours"
    rest = [n for n in names
            if not (n == LOCK_FILE and os.path.isfile(os.path.join(path, n))
                    and os.path.getsize(os.path.join(path, n)) == 0) and n != SERVE_LOG]
    if not rest:
        return "new"
    if any(_is_ours(path, n) for n in rest):
        return "adopt"
    shown = ", ".join(repr(n) for n in sorted(rest)[:3]) + (", ..." if len(rest) > 3 else "")
    raise NotADatabaseError(
        f"{path} is not a FuseDB database: it holds {len(rest)} other file(s) ({shown}) and "
        f"no {IDENTITY_FILE} identity file, MANIFEST or WAL file of FuseDB's. FuseDB creates a "
        f"database only in an empty or missing directory, and never changes one it does not "
        f"own: open an empty directory (for example a new subdirectory)")
