"""What the sync and the async ``limits`` storages share: the URI and its
options, the per-process handle cache, and every strategy's logic as plain
methods of :class:`Core` over one FuseDB handle.

Each method mirrors ``limits`` 5.8.0's ``memory://`` storage
(limits/storage/memory.py, ``MemoryStorage``) decision for decision, so the
same request trace gives the same decisions and window statistics; how each
is stored is in docs/adapters-limits.md. Times are unix seconds (floats, from
``time.time()``, as limits' strategies use); ``expiry`` is a limit's period in
seconds (``RateLimitItem.get_expiry()``).
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import os
import sys
import threading
import time
import urllib.parse
from array import array
from math import floor

from limits.errors import ConfigurationError

import fusedb
from fusedb.errors import ClosedError, FuseDBError, InvalidArgumentError
from fusedb.options import Options, daemon_options

#: The key prefix when none is given: RedisStorage's (limits/storage/redis.py, PREFIX).
DEFAULT_PREFIX = "LIMITS"
#: Keys deleted per batch by ``reset`` (one batch must fit one buffer).
RESET_CHUNK = 100
#: Options of the storage itself; every other option is a daemon option (Options).
STORAGE_OPTIONS = ("start", "timeout", "key_prefix", "db")
_DAEMON_FIELDS = {f.name: f for f in dataclasses.fields(Options)
                  if f.name not in ("clock", "mode")}

BIG_ENDIAN = sys.byteorder == "big"     # FuseDB's formats are little-endian

_handles: dict[str, fusedb.FuseDB] = {}
_handles_lock = threading.Lock()


# -- the URI and its options ---------------------------------------------------------

def _boolean(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"fusedb storage option {name}={text!r}: expected true or false")


def _convert(name: str, value):
    """An option's value from the URI's query (a str) as the type its field
    takes; values given as keyword arguments pass through unless they are str."""
    if not isinstance(value, str) or name in ("key_prefix", "durability"):
        return value
    if name in ("start", "pin"):     # pin: a list of CPUs only as a keyword option
        return _boolean(name, value)
    if name == "split_keys":
        raise ConfigurationError("fusedb storage option split_keys cannot be given in the "
                                 "URI; pass it as a keyword option (a list of keys)")
    number = float if name == "timeout" or isinstance(_DAEMON_FIELDS[name].default,
                                                      float) else int
    try:
        return number(value)
    except ValueError:
        raise ConfigurationError(f"fusedb storage option {name}={value!r}: expected "
                                 f"{number.__name__}") from None


@dataclasses.dataclass
class Config:
    """A storage's parsed configuration. ``path``: the database directory (an
    absolute path), or None when ``db`` (an open handle) is given."""

    path: str | None
    db: fusedb.FuseDB | None
    start: bool
    timeout: float
    key_prefix: str
    daemon: dict


def parse(uri: str | None, options: dict) -> Config:
    """``fusedb:///abs/path?opt=value&...`` (or ``async+fusedb://...``) and the
    storage's keyword options (merged over the query's) as a :class:`Config`.

    Options: ``start`` (bool, default True: start a ``fusedb serve`` daemon when
    none runs), ``timeout`` (seconds to wait for it, default 60), ``key_prefix``
    (default ``LIMITS``), ``db`` (an open FuseDB handle to use instead of the
    path), and the daemon's options (fields of fusedb.options.Options, used only
    when this call starts the daemon). Raises ``limits.errors.ConfigurationError``
    for a relative path or host part, an unknown option, or an invalid value."""
    parsed = urllib.parse.urlparse(uri or "fusedb://")
    if parsed.netloc:
        raise ConfigurationError(
            f"{uri}: a fusedb storage URI names a directory by its absolute path, with three "
            f"slashes: {parsed.scheme}:///abs/path/to/db (got host part {parsed.netloc!r})")
    given: dict = {}
    for name, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
        if name in given:
            raise ConfigurationError(f"{uri}: option {name} is given twice")
        given[name] = value
    given.update(options)
    known = set(STORAGE_OPTIONS) | set(_DAEMON_FIELDS)
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigurationError(f"fusedb storage: unknown option(s) {', '.join(unknown)}; "
                                 f"the options are {', '.join(sorted(known))}")
    values = {name: (v if name == "db" else _convert(name, v)) for name, v in given.items()}
    path = urllib.parse.unquote(parsed.path) or None
    db = values.pop("db", None)
    start = values.pop("start", True)
    timeout = values.pop("timeout", 60.0)
    prefix = values.pop("key_prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError("fusedb storage option key_prefix must be a non-empty string")
    if db is not None:
        if not isinstance(db, fusedb.FuseDB):
            raise ConfigurationError(f"fusedb storage option db must be a FuseDB handle, not "
                                     f"{type(db).__name__}")
        if path is not None or values:
            raise ConfigurationError("fusedb storage: with db= (an open handle) give neither "
                                     "a path nor daemon options")
        return Config(None, db, start, timeout, prefix, {})
    if path is None or not os.path.isabs(path):
        raise ConfigurationError(f"{uri}: give the database's absolute path, e.g. "
                                 f"fusedb:///var/lib/app/limits (or the option db=)")
    if values and not start:
        raise ConfigurationError(f"fusedb storage: daemon options ({', '.join(sorted(values))})"
                                 f" need start=true; a running database keeps its own")
    if start:
        try:
            values = daemon_options(values, "fusedb storage URI")
        except InvalidArgumentError as e:
            raise ConfigurationError(str(e)) from None
    return Config(os.path.normpath(path), None, start, timeout, prefix, values)


# -- the per-process handle cache ------------------------------------------------------

def handle(config: Config, dead: fusedb.FuseDB | None = None) -> fusedb.FuseDB:
    """The handle for ``config``: its ``db``, or this process's one handle for its
    path (every storage of the process shares it: attaching maps the shared memory,
    about 3 ms). Attaches with ``fusedb.connect(path, start=config.start, ...)``.
    Raises ``NotRunningError`` when no database runs there and none could be
    started, ConfigurationError for options the daemon refuses. ``dead``: a
    handle whose database closed under it (ClosedError): replaced if cached."""
    if config.db is not None:
        return config.db
    with _handles_lock:
        db = _handles.get(config.path)
        if db is None or db.closed or db is dead:
            if db is not None:
                _close(db)
            try:    # without start, daemon is empty and timeout unused
                db = fusedb.connect(config.path, start=config.start, timeout=config.timeout,
                                    **config.daemon)
            except InvalidArgumentError as e:
                raise ConfigurationError(str(e)) from None
            _handles[config.path] = db
        return db


def forget(path: str | None = None) -> None:
    """Close and drop this process's cached handle of ``path`` (every one when
    None), e.g. before its daemon is stopped; the next storage attaches anew."""
    with _handles_lock:
        for p in list(_handles) if path is None else [os.path.normpath(path)]:
            if p in _handles:
                _close(_handles.pop(p))


def _close(db: fusedb.FuseDB) -> None:
    try:
        db.close()
    except FuseDBError:
        pass        # its database is already gone: nothing left to release


def _reattaching(method):
    """Run ``method``; if the database closed under the handle (its daemon was
    stopped or restarted: ClosedError, raised before anything is applied),
    attach anew through the cache, which starts a daemon with ``start``, and
    run it once more. A storage made with ``db=`` raises instead."""
    @functools.wraps(method)
    def run(self, *args):
        try:
            return method(self, *args)
        except ClosedError:
            if self.config.db is not None:
                raise
            self.db = handle(self.config, dead=self.db)
        return method(self, *args)
    return run


# -- the moving window's value: timestamps, newest first -------------------------------

def decode(value: bytes | None) -> array:
    """A moving window's value (little-endian f64 unix times, newest first)."""
    ts = array("d", value or b"")
    if BIG_ENDIAN:
        ts.byteswap()
    return ts


def encode(ts: array) -> bytes:
    if BIG_ENDIAN:
        ts = array("d", ts)
        ts.byteswap()
    return ts.tobytes()


def in_window(ts, now: float, expiry: float) -> int:
    """How many of the newest-first times ``ts`` are in the window: more recent
    than ``now - expiry`` (memory://'s ``get_moving_window`` bisection)."""
    return bisect.bisect_left(ts, -(now - expiry), key=lambda t: -t)


def rejects(ts, limit: int, amount: int, now: float, expiry: float) -> bool:
    """memory://'s rule: refuse when ``amount > limit`` or the entry ``limit -
    amount`` places back is still in the window, i.e. less than ``expiry``
    seconds old. An entry exactly ``expiry`` old is out, as for memory://'s
    sweep, its ``get_moving_window`` and the value's TTL (memory://'s
    ``acquire_entry`` alone counts it in until its sweep has run)."""
    return amount > limit or (len(ts) > limit - amount and ts[limit - amount] > now - expiry)


# -- the strategies --------------------------------------------------------------------

class Core:
    """Every storage method over the handle of ``config``, keys under
    ``key_prefix + ":"``. Thread-safe as the handle is; each method's atomicity
    is in docs/adapters-limits.md."""

    def __init__(self, config: Config):
        self.config = config
        self.db = handle(config)
        self.prefix = config.key_prefix.encode() + b":"
        self.max_entries = self.db.max_value_size // 8

    def key(self, key: str) -> bytes:
        """A counter's database key: ``<prefix>:<limit key>``."""
        return self.prefix + key.encode()

    def window_key(self, key: str) -> bytes:
        """A moving window's database key: ``<prefix>:<limit key>/moving``, apart
        from the counter's as in memory:// (no limits key ends in ``/moving``)."""
        return self.prefix + key.encode() + b"/moving"

    # fixed window (and the sliding window counter's two counters)

    @_reattaching
    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add ``amount``; a new counter expires ``expiry`` seconds from now, a live
        one keeps its expiry. One atomic command. Returns the new count."""
        return self.db.incr(self.key(key), amount, ttl=expiry)

    @_reattaching
    def decr(self, key: str, amount: int = 1) -> int:
        """Take back ``amount`` from a live counter (a missing one stays missing)."""
        return self.db.incr(self.key(key), -amount, xx=True) or 0

    @_reattaching
    def get(self, key: str) -> int:
        """The live count, 0 if none."""
        value = self.db.get(self.key(key))
        return 0 if value is None else int(value)

    @_reattaching
    def get_expiry(self, key: str) -> float:
        """When the counter expires (unix time); now if it does not exist."""
        now = time.time()
        ttl = self.db.ttl(self.key(key))
        return now + ttl if ttl >= 0 else now

    @_reattaching
    def _delete(self, *keys: bytes) -> None:
        with self.db.batch() as b:      # one write
            for k in keys:
                b.delete(k)

    def clear(self, key: str) -> None:
        """Delete the counter and the moving window of ``key``."""
        self._delete(self.key(key), self.window_key(key))

    @_reattaching
    def reset(self) -> int:
        """Delete every key under the prefix (not the rest of the database); the
        number deleted."""
        keys = [k for k, _ in self.db.scan(prefix=self.prefix)]
        deleted = 0
        for i in range(0, len(keys), RESET_CHUNK):
            with self.db.batch() as b:
                for k in keys[i:i + RESET_CHUNK]:
                    b.delete(k)
            deleted += sum(b.results)
        return deleted

    @_reattaching
    def _read(self) -> None:
        self.db.get(self.prefix + b"check")

    def check(self) -> bool:
        """True if the database answers a read (attaching anew if it closed)."""
        try:
            self._read()
        except FuseDBError:
            return False
        return True

    # moving window

    @_reattaching
    def acquire_entry(self, key: str, limit: int, expiry: float, amount: int = 1) -> bool:
        """Take ``amount`` entries of the window if memory://'s rule allows. A
        refusal is decided on a read and writes nothing; an admission is decided
        again in ``db.update`` (atomic): ``amount`` times now go in front of the
        entries still in the window, and the value expires with its newest
        entry, ``expiry`` seconds from now (docs/adapters-limits.md). Raises
        ConfigurationError when ``limit`` entries cannot fit ``max_value_size``."""
        if limit > self.max_entries:
            raise ConfigurationError(
                f"a moving window of {limit} entries needs {8 * limit} bytes (8 per entry); "
                f"this database's max_value_size={self.db.max_value_size} holds at most "
                f"{self.max_entries} entries: give its daemon a larger max_value_size (URI "
                f"option max_value_size=...; it applies when the daemon starts: fusedb stop "
                f"PATH first if one runs)")
        now = time.time()
        k = self.window_key(key)
        if rejects(decode(self.db.get(k)), limit, amount, now, expiry):
            return False
        admitted = False

        def take(current: bytes | None) -> bytes | None:
            nonlocal admitted
            ts = decode(current)
            admitted = not rejects(ts, limit, amount, now, expiry)
            if not admitted:
                return current
            new = array("d", [now]) * amount
            new.extend(ts[:min(limit - amount, in_window(ts, now, expiry))])
            return encode(new)

        self.db.update(k, take, ttl=expiry)
        return admitted

    @_reattaching
    def get_moving_window(self, key: str, limit: int, expiry: float) -> tuple[float, int]:
        """(start of the window: its oldest live entry's time, entries in it);
        (now, 0) if none."""
        now = time.time()
        ts = decode(self.db.get(self.window_key(key)))
        oldest = in_window(ts, now, expiry)
        if oldest:
            return ts[oldest - 1], oldest
        return now, 0       # none, or only entries memory://'s purge would have removed

    # sliding window counter (memory://'s code over the two counters)

    def _sliding_info(self, previous: str, current: str, expiry: float,
                      now: float) -> tuple[int, float, int, float]:
        previous_count = self.get(previous)
        current_count = self.get(current)
        if previous_count == 0:
            previous_ttl = 0.0
        else:
            previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous_count, previous_ttl, current_count, current_ttl

    def acquire_sliding_window_entry(self, keys, key: str, limit: int, expiry: float,
                                     amount: int = 1) -> bool:
        """memory://'s rule: refuse if the weighted count plus ``amount`` passes
        ``limit``; else add ``amount`` to the current window's counter (a new one
        expires in ``2 * expiry``) and take it back if the count now passes
        ``limit`` (another hit came first). Not atomic as a whole, as in
        memory:// and Redis: concurrent hits may under-admit, never over-admit.
        ``keys``: ``sliding_window_keys`` (limits' TimestampedSlidingWindow)."""
        if amount > limit:
            return False
        now = time.time()
        previous, current = keys(key, expiry, now)
        previous_count, previous_ttl, current_count, _ = self._sliding_info(
            previous, current, expiry, now)
        if floor(previous_count * previous_ttl / expiry + current_count) + amount > limit:
            return False
        current_count = self.incr(current, 2 * expiry, amount)
        if floor(previous_count * previous_ttl / expiry + current_count) > limit:
            self.decr(current, amount)
            return False
        return True

    def get_sliding_window(self, keys, key: str, expiry: float
                           ) -> tuple[int, float, int, float]:
        """(previous count, its remaining weight in seconds, current count, seconds
        until the current window's counter expires), as memory:// computes them."""
        now = time.time()
        previous, current = keys(key, expiry, now)
        return self._sliding_info(previous, current, expiry, now)

    def clear_sliding_window(self, keys, key: str, expiry: float) -> None:
        previous, current = keys(key, expiry, time.time())
        self._delete(self.key(previous), self.key(current))


def core(uri: str | None, options: dict) -> Core:
    """The :class:`Core` a storage made with ``uri`` and ``options`` uses."""
    return Core(parse(uri, options))
