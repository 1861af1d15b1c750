"""The Redis protocol listeners of ``fusedb serve`` and their server processes.

:class:`Listen` holds the flags (``--bind``, ``--port``, ``--unixsocket``,
``--unixsocketperm``, ``--requirepass``, ``--servers``, ``--maxclients``);
:func:`bind` makes the listening sockets, in serve, once the database is
open (so a port in use is reported once, and ``--if-not-running`` still
exits 0 on a running daemon); :class:`ServerProcesses` starts K processes
``python -m fusedb.resp.process`` that inherit the sockets (one shared
accept queue: a server process killed loses none of the connections
waiting to be accepted, where SO_REUSEPORT would reset them; and unix
sockets cannot be SO_REUSEPORT), waits until each is ready, restarts a dead
one (fusedb.router.spawn.Supervisor, the shard workers' policy) and stops
them: SIGTERM, then SIGKILL after a deadline.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field

from fusedb.errors import FuseDBError
from fusedb.router.spawn import Supervisor, child_env

log = logging.getLogger("fusedb.serve")


@dataclass
class Listen:
    """The listener flags of serve. ``port`` 0 and ``unixsocket`` None: no
    listener (the daemon serves fusedb.connect only). ``password``: bytes or
    None. ``unixsocketperm``: the socket file's mode."""

    bind: str = "127.0.0.1"
    port: int = 0
    unixsocket: str | None = None
    unixsocketperm: int = 0o700
    password: bytes | None = None
    servers: int = field(default_factory=lambda: os.cpu_count() or 1)
    maxclients: int = 10000

    @property
    def wanted(self) -> bool:
        return bool(self.port or self.unixsocket)

    def protected_mode_refusal(self) -> str | None:
        """Redis's protected mode as a start-time refusal: the message if TCP
        listens on a non-loopback address without a password, else None."""
        if not self.port or self.password is not None or is_loopback(self.bind):
            return None
        return (f"refusing to listen on {self.bind} without --requirepass (protected mode: "
                f"any host could reach the database); set a password or bind 127.0.0.1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Listeners:
    """The bound listening sockets (inheritable). :meth:`close` closes them
    and unlinks the unix socket file if it is still the one made here."""

    def __init__(self):
        self.socks: list[socket.socket] = []
        self.unix_path: str | None = None
        self.unix_ino = 0

    def fds(self) -> list[int]:
        return [s.fileno() for s in self.socks]

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []
        if self.unix_path:
            try:
                if os.stat(self.unix_path).st_ino == self.unix_ino:
                    os.unlink(self.unix_path)
            except FileNotFoundError:
                pass
            self.unix_path = None


def bind(listen: Listen) -> Listeners:
    """Bind and listen (backlog 511, as Redis) on ``listen``'s TCP address and
    unix socket. Raises OSError with a one-line message (port in use, a unix
    socket path in use or not a socket)."""
    out = Listeners()
    try:
        if listen.port:
            try:
                s = socket.create_server((listen.bind, listen.port), backlog=511,
                                         reuse_port=False)
            except OSError as e:
                raise OSError(f"cannot listen on {_host_port(listen.bind, listen.port)}: "
                              f"{e.strerror or e}") from None
            out.socks.append(s)
        if listen.unixsocket:
            out.socks.append(_bind_unix(listen.unixsocket, listen.unixsocketperm, out))
        for s in out.socks:
            s.set_inheritable(True)
    except BaseException:
        out.close()
        raise
    return out


def _bind_unix(path: str, perm: int, out: Listeners) -> socket.socket:
    path = os.path.abspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"--unixsocket {path}: exists and is not a socket")
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(path)
                raise OSError(f"--unixsocket {path}: another server listens on it")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)          # a stale socket of a dead server
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        s.bind(path)
    except OSError as e:
        s.close()
        raise OSError(f"--unixsocket {path}: {e.strerror or e}") from None
    finally:
        os.umask(old)
    os.chmod(path, perm)
    s.listen(511)
    out.unix_path = path
    out.unix_ino = os.stat(path).st_ino
    return s


class ServerProcesses:
    """K server processes of ``path`` sharing ``listeners`` (module doc)."""

    def __init__(self, path: str, listen: Listen, listeners: Listeners, config: dict):
        self.path = path
        self.listen = listen
        self.listeners = listeners
        self.config = config
        self.procs: list[subprocess.Popen | None] = []
        self._ready: dict[int, int] = {}            # slot -> read end of its ready pipe
        # serve holds the write end; the servers watch the read end: EOF = serve died.
        self._parent_r, self._parent_w = os.pipe()
        self._supervisor: Supervisor | None = None

    def start(self, timeout: float = 30.0, stopping=lambda: False) -> None:
        """Start the K processes, wait until each is ready (at most ``timeout``
        seconds), then supervise them. Raises FuseDBError if one exits or is
        not ready in time, or ``stopping()`` turns true meanwhile (a stop
        signal: then all are stopped at once), OSError if one cannot start."""
        try:
            self.procs = [self._spawn(i) for i in range(self.listen.servers)]
            deadline = time.monotonic() + timeout
            for i, p in enumerate(self.procs):
                self._wait_ready(i, p, deadline, stopping)
        except BaseException:
            self.stop()
            raise
        self._supervisor = Supervisor(self.procs, self._spawn,
                                      lambda no: f"redis server process {no}")
        self._supervisor.start()
        log.info("redis protocol: %d server process(es) (pids %s) on %s", len(self.procs),
                 ", ".join(str(p.pid) for p in self.procs), self.where())

    def where(self) -> str:
        places = []
        if self.listen.port:
            places.append(_host_port(self.listen.bind, self.listen.port))
        if self.listen.unixsocket:
            places.append(os.path.abspath(self.listen.unixsocket))
        return " and ".join(places)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None]

    def _spawn(self, no: int) -> subprocess.Popen:
        ready_r, ready_w = os.pipe()
        fds = [ready_w, self._parent_r] + self.listeners.fds()
        cmd = [sys.executable, "-m", "fusedb.resp.process", self.path, "--index", str(no),
               "--servers", str(self.listen.servers), "--ready-fd", str(ready_w),
               "--parent-fd", str(self._parent_r), "--maxclients",
               str(self.listen.maxclients)]
        cmd += [f"--listen-fd={fd}" for fd in self.listeners.fds()]
        cmd += [f"--config={k}={v}" for k, v in self.config.items()]
        pw_r = None
        if self.listen.password is not None:
            pw_r, pw_w = os.pipe()
            os.write(pw_w, self.listen.password)     # a password fits a pipe's buffer
            os.close(pw_w)
            fds.append(pw_r)
            cmd += ["--password-fd", str(pw_r)]
        try:
            # A process group of its own: a terminal's Ctrl-C or hang-up reaches serve,
            # which stops the servers itself (they would otherwise die first and be
            # restarted by the supervisor).
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 env=child_env(), close_fds=True, pass_fds=fds,
                                 process_group=0)
        finally:
            os.close(ready_w)
            if pw_r is not None:
                os.close(pw_r)
        old = self._ready.pop(no, None)
        if old is not None:
            os.close(old)
        self._ready[no] = ready_r
        return p

    def _wait_ready(self, no: int, p: subprocess.Popen, deadline: float,
                    stopping=lambda: False) -> None:
        fd = self._ready.pop(no)
        try:
            got = b""
            while b"\n" not in got:
                if stopping():
                    raise FuseDBError("stopped by a signal while the redis server processes "
                                      "were starting")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FuseDBError(f"redis server process {no} (pid {p.pid}) was not "
                                      f"ready in time")
                if select.select([fd], [], [], min(left, 0.1))[0]:
                    chunk = os.read(fd, 64)
                    if not chunk:
                        p.wait(5)
                        raise FuseDBError(f"redis server process {no} exited with code "
                                          f"{p.returncode} while starting (its log line "
                                          f"says why)")
                    got += chunk
        finally:
            os.close(fd)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop supervising; SIGTERM each process, SIGKILL those still running
        after ``timeout`` seconds; reap them."""
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("redis server process (pid %d) did not stop in %ss; killing it",
                            p.pid, timeout)
                p.kill()
                p.wait()
        for fd in list(self._ready.values()) + [self._parent_r, self._parent_w]:
            if fd >= 0:
                os.close(fd)
        self._ready = {}
        self._parent_r = self._parent_w = -1
        self.procs = []


def _host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:6379``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
