"""Per-process and per-connection state of a server process.

:class:`Server` is one per server process (fusedb.resp.process makes it);
:class:`Context` one per client connection (fusedb.resp.conn makes it). Every
command function takes the connection's Context (fusedb.resp.commands).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Server:
    """What one server process knows: ``db`` (its fusedb.FuseDB handle, a
    client of the daemon), ``password`` (bytes, or None: no AUTH needed),
    ``config`` (CONFIG GET's answers: name -> str), ``index`` and ``servers``
    (this process's number, 0..K-1, and K), ``clients`` (connection id ->
    Context, this process's connections only), ``stats`` (counters: name ->
    int, a defaultdict: a Counter's store costs 2.5x; ``commands``,
    ``connections``, ``rejected``, ``net_in``, ``net_out``,
    ``hits``, ``misses``, ``cmd:<name>``), ``scripts`` (the Lua state, owned
    by fusedb.resp.scripting; None until the first script), ``started``
    (unix seconds)."""

    db: object
    password: bytes | None = None
    config: dict = field(default_factory=dict)
    index: int = 0
    servers: int = 1
    clients: dict = field(default_factory=dict)
    stats: defaultdict = field(default_factory=lambda: defaultdict(int))
    scripts: object = None
    started: float = field(default_factory=time.time)
    next_id: int = 0
    #: fusedb.resp._hot.HotPath over ``db`` (False: none; None: not made yet).
    hot: object = None

    def new_id(self) -> int:
        """A client id unique across the K server processes: index + K * n."""
        self.next_id += 1
        return self.index + self.servers * self.next_id


class Context:
    """One client connection's state. ``store`` is where commands act: the
    database handle (``server.db``), or, while EXEC or a script runs, the
    fusedb.api.transaction.Transaction they run in; ``resp`` is 2 until HELLO 3;
    ``authed`` False until AUTH when the server has a password; ``multi`` the
    queued (spec, argv) of an open MULTI (None: none open) and
    ``multi_failed`` whether one of them was refused at queue time;
    ``close_after`` set by QUIT (the connection closes once the reply is
    written); ``kill`` set by CLIENT KILL of another connection (a callable
    that closes it, set by fusedb.resp.conn)."""

    __slots__ = ("server", "db", "store", "resp", "authed", "id", "name", "lib_name",
                 "lib_ver", "addr", "laddr", "since", "last", "multi", "multi_failed",
                 "close_after", "kill", "last_cmd")

    def __init__(self, server: Server, addr: str = "", laddr: str = ""):
        self.server = server
        self.db = server.db
        self.store = server.db
        self.resp = 2
        self.authed = server.password is None
        self.id = server.new_id()
        self.name: bytes | None = None
        self.lib_name: bytes | None = None
        self.lib_ver: bytes | None = None
        self.addr = addr
        self.laddr = laddr
        self.since = self.last = time.time()
        self.multi: list | None = None
        self.multi_failed = False
        self.close_after = False
        self.kill = None
        self.last_cmd = b"NULL"

    def atomic(self, fn, keys):
        """``fn(tx)`` in one transaction over ``keys`` (an iterable of bytes):
        inside EXEC or a script (``store`` is already a transaction), run at
        once on it; otherwise ``db.transact(fn, keys)``. Returns what fn
        returns."""
        if self.store is not self.db:
            return fn(self.store)
        return self.db.transact(fn, keys)
