"""Entry kinds and the key hash shared by buffers, segments and (later) the WAL.

Spec: docs/format.md, "Entry kinds" and "Key hash".
"""

from __future__ import annotations

import re

import xxhash

#: A plain value: the bytes as given to ``put``.
KIND_VALUE = 1
#: A counter made by ``incr``: stored as 8 bytes, little-endian signed 64-bit.
KIND_INT = 2
#: A tombstone left by ``delete``: no value bytes.
KIND_DEL = 3

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

#: 64-bit key hash, stable across processes and runs (unlike ``hash()``).
key_hash = xxhash.xxh3_64_intdigest

# Redis's INCR accepts exactly this: optional minus, no leading zeros, no "-0",
# no spaces, no plus sign; at most 20 characters.
_DECIMAL = re.compile(rb"-?[1-9][0-9]{0,19}|0")


def parse_decimal(value: bytes) -> int | None:
    """The int an ASCII decimal ``value`` spells, if it is a signed 64-bit integer."""
    if _DECIMAL.fullmatch(value) is None:
        return None
    n = int(value)
    if n < INT64_MIN or n > INT64_MAX:
        return None
    return n
