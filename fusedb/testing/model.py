"""The one dict model of the API contract, and what tests share with it: a fake
clock, small option sets, ``outcome``. Pure: no FuseDB internals."""

from __future__ import annotations

import re

from fusedb.errors import IntegerOverflowError, InvalidArgumentError, NotAnIntegerError, \
    ValueTypeError

__all__ = ["TINY", "SMALL", "INT64_MIN", "INT64_MAX", "TTL_NONE", "TTL_MISSING", "FakeClock",
           "decimal", "Model", "bytes_like", "outcome"]

#: Small sizes so that a few hundred operations freeze buffers, merge and split.
TINY = dict(buffer_bytes=4096, buffer_slots=16, arena_bytes=4096 * 16, leaf_max_bytes=1500,
            max_key_size=32, max_value_size=200, hot_fills=3, min_split_entries=8,
            merge_tick=0.002, write_timeout=30.0)
#: Even smaller: four slots per buffer, so a buffer freezes after four distinct keys.
SMALL = dict(TINY, buffer_slots=4, leaf_max_bytes=400, min_split_entries=4, hot_fills=2)

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
TTL_NONE, TTL_MISSING = -1.0, -2.0


class FakeClock:
    """Injectable clock (``fusedb.open(path, clock=FakeClock())``): time moves only
    when a test advances it. Start it at or after the real time when worker
    processes run (they reclaim expired entries by the real clock)."""

    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


# -- the model ---------------------------------------------------------------------

_DECIMAL = re.compile(rb"-?[1-9][0-9]{0,19}|0")


def decimal(value: bytes) -> int | None:
    """The signed 64-bit int an ASCII decimal value spells (Redis INCR rules: no
    sign but '-', no leading zero, no spaces), else None."""
    if _DECIMAL.fullmatch(value) is None:
        return None
    n = int(value)
    return n if INT64_MIN <= n <= INT64_MAX else None


class Model:
    """The README contract as a dict: key -> (value bytes, expiry time or 0.0).

    Every method takes ``now`` (the database's clock) and behaves as the engine
    must: expired keys are invisible, a counter is stored as its ASCII decimal,
    ``incr`` keeps an existing TTL and counts an expired key as 0, a failing
    operation changes nothing and raises the engine's error class. Used by every
    state machine and random test; single-threaded."""

    def __init__(self, live: dict[bytes, bytes] | None = None):
        #: key -> (value, expiry time or 0.0); tuples, so a shallow copy is a copy.
        self.data: dict[bytes, tuple[bytes, float]] = {
            k: (v, 0.0) for k, v in (live or {}).items()}

    def copy(self) -> Model:
        m = Model()
        m.data = dict(self.data)
        return m

    @staticmethod
    def _exp(ttl, now: float) -> float:
        return 0.0 if ttl is None else now + ttl

    def _entry(self, k: bytes, now: float):
        e = self.data.get(k)
        if e is None or (e[1] and e[1] <= now):
            return None
        return e

    def live(self, now: float = 0.0) -> dict[bytes, bytes]:
        """Every live key and its value (``now`` is irrelevant without TTLs)."""
        return {k: v for k, (v, e) in self.data.items() if e == 0 or e > now}

    def put(self, k: bytes, v: bytes, ttl, now: float, nx: bool = False, xx: bool = False,
            keepttl: bool = False, get: bool = False):
        """``db.put`` with its options (Redis SET NX|XX|KEEPTTL|GET)."""
        v = bytes_like(v)
        if (nx and xx) or (keepttl and ttl is not None):
            raise InvalidArgumentError("put options")
        e = self._entry(k, now)
        stores = not ((nx and e is not None) or (xx and e is None))
        if stores:
            exp = e[1] if keepttl and e is not None else self._exp(ttl, now)
            self.data[k] = (v, exp)
        if get:
            return None if e is None else e[0]
        return stores if nx or xx else None

    def add(self, k: bytes, v: bytes, ttl, now: float) -> bool:
        return self.put(k, v, ttl, now, nx=True)

    def getdel(self, k: bytes, now: float) -> bytes | None:
        e = self._entry(k, now)
        self.data.pop(k, None)
        return None if e is None else e[0]

    def getex(self, k: bytes, ttl, now: float) -> bytes | None:
        e = self._entry(k, now)
        if e is None:
            return None
        self.data[k] = (e[0], self._exp(ttl, now))
        return e[0]

    def touch(self, k: bytes, ttl, now: float) -> bool:
        return self.expire(k, ttl, now)

    def get(self, k: bytes, now: float) -> bytes | None:
        e = self._entry(k, now)
        return None if e is None else e[0]

    def get_many(self, ks, now: float) -> list:
        return [self.get(k, now) for k in ks]

    def incr(self, k: bytes, delta: int, now: float, ttl=None, xx: bool = False) -> int | None:
        """``db.incr``: ``ttl`` only for a key it creates; ``xx``: None for a key
        that is not alive."""
        if delta < INT64_MIN or delta > INT64_MAX:
            raise IntegerOverflowError("delta")
        if xx and ttl is not None:
            raise InvalidArgumentError("incr takes xx or a ttl")
        e = self._entry(k, now)
        if e is None and xx:
            return None
        base, exp = (0, self._exp(ttl, now)) if e is None else (decimal(e[0]), e[1])
        if base is None:
            raise NotAnIntegerError(k)
        new = base + delta
        if not INT64_MIN <= new <= INT64_MAX:
            raise IntegerOverflowError(k)
        self.data[k] = (b"%d" % new, exp)
        return new

    def delete(self, k: bytes, now: float) -> bool:
        existed = self._entry(k, now) is not None
        self.data.pop(k, None)
        return existed

    def expire(self, k: bytes, ttl, now: float) -> bool:
        e = self._entry(k, now)
        if e is None:
            return False
        self.data[k] = (e[0], self._exp(ttl, now))
        return True

    def ttl(self, k: bytes, now: float) -> float:
        e = self._entry(k, now)
        if e is None:
            return TTL_MISSING
        return TTL_NONE if e[1] == 0 else e[1] - now

    def scan(self, now: float, start=None, stop=None, prefix=None, limit=None,
             reverse=False) -> list[tuple[bytes, bytes]]:
        out = sorted((k, v) for k, v in self.live(now).items()
                     if (prefix is None or k.startswith(prefix))
                     and (start is None or k >= start) and (stop is None or k < stop))
        if reverse:
            out.reverse()
        return out if limit is None else out[:limit]

    def batch(self, ops, now: float) -> list:
        """Apply ``ops`` ((name, key, arg, ttl) tuples: put arg=value or
        (value, options dict), incr arg=delta or (delta, xx), delete, expire,
        touch, getdel, getex, add arg=value; and a transaction's reads: get, keys)
        all or nothing; one result per op."""
        trial = self.copy()
        results = []
        for name, k, arg, ttl in ops:
            if name == "put":
                value, options = arg if isinstance(arg, tuple) else (arg, {})
                results.append(trial.put(k, value, ttl, now, **options))
            elif name == "add":
                results.append(trial.add(k, arg, ttl, now))
            elif name == "incr":
                delta, xx = arg if isinstance(arg, tuple) else (arg, False)
                results.append(trial.incr(k, delta, now, ttl, xx))
            elif name == "delete":
                results.append(trial.delete(k, now))
            elif name == "getdel":
                results.append(trial.getdel(k, now))
            elif name == "getex":
                results.append(trial.getex(k, ttl, now))
            elif name == "get":
                results.append(trial.get(k, now))
            elif name == "keys":
                results.append(sorted(trial.live(now)))
            else:
                results.append(trial.expire(k, ttl, now))
        self.data = trial.data
        return results

    def update(self, k: bytes, fn, ttl, now: float):
        """``db.update``: fn(current value or None) -> new bytes or None (delete);
        ttl None keeps an existing TTL; returns what was stored."""
        e = self._entry(k, now)
        current = None if e is None else e[0]
        new = fn(current)
        if new is current and ttl is None:
            return current
        if new is None:
            self.data.pop(k, None)
            return None
        new = bytes_like(new)
        exp = (e[1] if e is not None else 0.0) if ttl is None else now + ttl
        self.data[k] = (new, exp)
        return new

    def items(self, now: float) -> list[tuple[bytes, bytes]]:
        """``list(db.items())``: the live pairs in key order (also ``list(db)``'s
        keys and ``list(db.values())``'s values, ``len(db)`` their number)."""
        return self.scan(now)


def bytes_like(v) -> bytes:
    """What a bytes-like value is stored as (README, "Values and keys"): the
    bytes of any buffer, ``memoryview(v).tobytes()``. ValueTypeError for a
    non-buffer (a buffer of Python objects is not modelled)."""
    try:
        with memoryview(v) as view:
            return view.tobytes()
    except TypeError:
        raise ValueTypeError(type(v).__name__) from None


def outcome(fn, *args, **kwargs):
    """("ok", result) or ("err", error class name): compares an engine call with
    the model's without caring where it ran."""
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - returned for comparison
        return "err", type(e).__name__
