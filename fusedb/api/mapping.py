"""The mapping protocol of :class:`fusedb.api.db.FuseDB` (a mixin), as
``collections.abc.Mapping`` has it: ``db[k]``, ``db[k] = v``, ``del db[k]``,
``k in db``, ``get``, and iteration backed by scans: ``iter(db)``,
``reversed(db)``, ``keys()``, ``values()``, ``items()``, ``len(db)``.

Iteration reads leaf by leaf, a chunk at a time, as ``scan()`` does
(docs/design.md, "Scans"): it never loads the whole database, and it is not a
snapshot. Writes made while an iteration runs (by this or any thread or
process) are allowed, never raise, and never make a key appear twice or out of
order; a key unchanged during the iteration is seen exactly once; a key
written or deleted meanwhile may or may not be seen (a leaf already read is
not read again). ``dict(db.items())`` copies the database in one pass.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView

from fusedb.api import scan as _scan
from fusedb.errors import FuseDBKeyError


class Mapping:
    """The mapping methods, for a class with ``get``, ``put``, ``delete``,
    ``scan``, ``_x`` (its executor), ``_check_open()`` and ``_closed``."""

    def __getitem__(self, key) -> bytes:
        v = self.get(key)
        if v is None:
            raise FuseDBKeyError(key)
        return v

    def __setitem__(self, key, value) -> None:
        self.put(key, value)

    def __delitem__(self, key) -> None:
        if not self.delete(key):
            raise FuseDBKeyError(key)

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __iter__(self) -> Iterator[bytes]:
        """The live keys (bytes) in ascending byte order, read lazily by a
        scan: not a snapshot (module docstring). ClosedError if the handle is
        (or gets) closed."""
        return self._key_scan(False)

    def __reversed__(self) -> Iterator[bytes]:
        """The live keys in descending byte order (a reverse scan), as
        ``iter(db)`` otherwise."""
        return self._key_scan(True)

    def _key_scan(self, reverse: bool) -> Iterator[bytes]:
        self._check_open()
        return _scan.scan(self._x, self._check_open, lambda: self._closed, None, None, None,
                          None, reverse, keys_only=True)

    def __len__(self) -> int:
        """The number of live keys: a count by a full scan (vectorised, no
        per-key object, but O(keys) time: FuseDB keeps no running count, since
        overwrites, deletes and expiry are resolved only when read). Not a
        snapshot: keys written or deleted while it counts may or may not count.
        ``list(db)`` also calls it (for its size hint): that is one count plus
        the iteration."""
        self._check_open()
        return _scan.count(self._x, self._check_open)

    def __bool__(self) -> bool:
        """Always True, open or closed: a handle is a handle (``if db:`` stays
        cheap). Test emptiness with ``next(iter(db), None) is None``."""
        return True

    def keys(self) -> KeysView:
        """A view of the live keys (bytes): iterating it is ``iter(db)``; ``in``
        is ``in db``; ``len()`` is ``len(db)``; set operations as a dict's."""
        return KeysView(self)

    def values(self) -> ValuesView:
        """A view of the live values (bytes; a counter as its ASCII decimal),
        in key order, each iteration a scan (module docstring)."""
        return _Values(self)

    def items(self) -> ItemsView:
        """A view of the live (key, value) pairs in key order: iterating it is
        ``db.scan()``; ``(k, v) in items`` reads ``k``."""
        return _Items(self)


class _Values(ValuesView):
    def __iter__(self) -> Iterator[bytes]:
        return (v for _k, v in self._mapping.scan())

    def __contains__(self, value) -> bool:
        return any(v is value or v == value for v in self)


class _Items(ItemsView):
    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return self._mapping.scan()

    def __contains__(self, item) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        key, value = item
        v = self._mapping.get(key)
        return v is not None and (v is value or v == value)
