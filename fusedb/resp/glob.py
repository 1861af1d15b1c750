"""Redis's glob patterns (KEYS, SCAN MATCH): a port of ``stringmatchlen``
(Redis 7.0.15 src/util.c, case-sensitive), not :mod:`fnmatch`, which differs
on ``[!a]`` (Redis: ``[^a]``), on backslash escapes and on an unterminated
``[``.

``*`` any run of bytes, ``?`` one byte, ``[abc]`` ``[a-z]`` ``[^a]`` a set
(a reversed range is swapped; bytes compare as C's signed ``char``, as on
x86), ``\\x`` the byte x.
"""

from __future__ import annotations

_SPECIAL = frozenset(b"*?[\\")


def literal_prefix(pattern: bytes) -> bytes:
    """The bytes every match starts with: the pattern up to its first
    special byte (``*``, ``?``, ``[``, ``\\``)."""
    for i, c in enumerate(pattern):
        if c in _SPECIAL:
            return pattern[:i]
    return pattern


def _signed(c: int) -> int:
    return c - 256 if c > 127 else c


def stringmatch(pattern: bytes, string: bytes) -> bool:
    """Whether ``string`` matches ``pattern`` (both bytes), as Redis's
    ``stringmatchlen(pattern, plen, string, slen, 0)``."""
    try:
        return _match(pattern, 0, string, 0, [False])
    except RecursionError:      # thousands of '*': Redis would take forever too
        return False


def _match(p: bytes, pi: int, s: bytes, si: int, skip: list) -> bool:
    plen, slen = len(p), len(s)

    def pat(i: int) -> int:     # C reads the NUL terminator past the end
        return p[i] if i < plen else 0

    while pi < plen and si < slen:
        c = p[pi]
        if c == 42:     # '*'
            while pi + 1 < plen and p[pi + 1] == 42:
                pi += 1
            if pi + 1 == plen:
                return True
            while si < slen:
                if _match(p, pi + 1, s, si, skip):
                    return True
                if skip[0]:
                    return False
                si += 1
            skip[0] = True
            return False
        elif c == 63:   # '?'
            si += 1
        elif c == 91:   # '['
            pi += 1
            negate = pat(pi) == 94      # '^'
            if negate:
                pi += 1
            match = False
            while True:
                if pat(pi) == 92 and plen - pi >= 2:    # '\\'
                    pi += 1
                    if p[pi] == s[si]:
                        match = True
                elif pat(pi) == 93:     # ']'
                    break
                elif pi >= plen:
                    pi -= 1
                    break
                elif plen - pi >= 3 and p[pi + 1] == 45:   # '-'
                    lo, hi, ch = _signed(p[pi]), _signed(p[pi + 2]), _signed(s[si])
                    if lo > hi:
                        lo, hi = hi, lo
                    pi += 2
                    if lo <= ch <= hi:
                        match = True
                elif p[pi] == s[si]:
                    match = True
                pi += 1
            if negate:
                match = not match
            if not match:
                return False
            si += 1
        else:
            if c == 92 and plen - pi >= 2:      # '\\': the next byte literally
                pi += 1
            if p[pi] != s[si]:
                return False
            si += 1
        pi += 1
        if si == slen:
            while pat(pi) == 42:
                pi += 1
            break
    return pi >= plen and si == slen
