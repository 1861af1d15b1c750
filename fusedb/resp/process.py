"""A server process: ``python -m fusedb.resp.process PATH [options]``.

Started by ``fusedb serve`` (fusedb.tools.servers), never by hand. It
inherits the listening sockets (``--listen-fd``, one per listener: TCP and/or
unix; all K processes accept on the same sockets), attaches to the daemon
of PATH with ``fusedb.connect`` and answers the connections it accepts on an
event loop (uvloop where installed, else asyncio). A command runs in the
process that read it.

- The password comes through an inherited pipe (``--password-fd``), never
  argv (argv is visible to every user in ``ps``).
- SIGTERM/SIGINT handlers are installed on the loop *before* connecting, so
  FuseDB's deferring handlers stay out (fusedb.runtime.signals). On SIGTERM:
  stop accepting, answer what was read, flush (at most STOP_FLUSH seconds),
  close the connections, detach (``db.close()``), exit 0.
- ``--parent-fd``: a pipe only serve holds the write end of. EOF means serve
  is gone (killed): exit at once (a server must not keep the port open).
- A command that meets ClosedError (the daemon is gone): exit 3.
- ``--ready-fd``: "ready\\n" is written there once it serves.
- The soft RLIMIT_NOFILE is raised to maxclients + 64 (at most the hard
  limit); ``gc.freeze()`` after start (fewer, shorter collections: p99).

Exit status: 0 stopped by a signal, 1 could not start (message on stderr),
3 the daemon went away.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import resource
import signal
import socket
import sys
import time

log = logging.getLogger("fusedb.serve")
STOP_FLUSH = 2.0         # seconds to flush replies at stop


def _args(argv):
    ap = argparse.ArgumentParser(prog="fusedb.resp.process")
    ap.add_argument("path")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--servers", type=int, default=1)
    ap.add_argument("--listen-fd", type=int, action="append", default=[])
    ap.add_argument("--parent-fd", type=int)
    ap.add_argument("--ready-fd", type=int)
    ap.add_argument("--password-fd", type=int)
    ap.add_argument("--maxclients", type=int, default=10000)
    ap.add_argument("--query-limit", type=int, default=64 << 20)
    ap.add_argument("--config", action="append", default=[], metavar="NAME=VALUE",
                    help="CONFIG GET's answers")
    return ap.parse_args(argv)


def _read_fd(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read()


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.warning("could not raise the open files limit to %d: %s", target, e)


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Process:
    """The running server process (module doc)."""

    def __init__(self, args):
        self.args = args
        self.loop = new_loop()
        self.status = 0
        self.stopping = asyncio.Event()
        self.listeners = []

    def stop(self, status: int = 0) -> None:
        if not self.stopping.is_set():
            self.status = status
            self.stopping.set()

    def fatal(self, exc) -> None:
        log.error("server process %d: the daemon is gone (%s); exiting", self.args.index, exc)
        self.stop(3)

    def _parent_gone(self) -> None:
        try:
            data = os.read(self.args.parent_fd, 64)
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.args.parent_fd)
            log.error("server process %d: fusedb serve is gone; exiting", self.args.index)
            os._exit(3)

    async def main(self) -> int:
        import fusedb
        from fusedb.errors import FuseDBError
        from fusedb.resp.conn import Connection, Limits
        from fusedb.resp.state import Server

        a = self.args
        loop = self.loop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if a.parent_fd is not None:
            loop.add_reader(a.parent_fd, self._parent_gone)
        password = _read_fd(a.password_fd) if a.password_fd is not None else None
        try:
            db = fusedb.connect(a.path)
        except (FuseDBError, OSError) as e:
            print(f"fusedb server process {a.index}: cannot attach to {a.path}: {e}",
                  file=sys.stderr)
            return 1
        config = dict(c.split("=", 1) for c in a.config)
        server = Server(db, password or None, config, a.index, a.servers)
        limits = Limits(a.maxclients, a.query_limit)

        def factory():
            return Connection(server, limits, self.fatal)
        try:
            for fd in a.listen_fd:
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)
                self.listeners.append(await loop.create_server(factory, sock=sock,
                                                               backlog=511))
            gc.collect()
            gc.freeze()
            if a.ready_fd is not None:
                try:
                    os.write(a.ready_fd, b"ready\n")
                except BrokenPipeError:
                    pass             # a restart nobody waits for
                os.close(a.ready_fd)
            await self.stopping.wait()
            await self._shutdown(server)
        finally:
            try:
                db.close()
            except FuseDBError as e:
                log.warning("server process %d: detaching: %s", a.index, e)
        return self.status

    async def _shutdown(self, server) -> None:
        """Stop accepting; close every connection once its replies are
        written (at most STOP_FLUSH seconds)."""
        for srv in self.listeners:
            srv.close()
        for ctx in list(server.clients.values()):
            if ctx.kill is not None:
                ctx.kill()
        deadline = time.monotonic() + STOP_FLUSH
        while server.clients and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


def main(argv=None) -> int:
    logging.basicConfig(level="INFO", stream=sys.stderr,
                        format="%(asctime)s %(levelname)s fusedb[%(process)d] %(message)s")
    args = _args(argv)
    raise_nofile(args.maxclients + 64)
    proc = Process(args)
    try:
        return proc.loop.run_until_complete(proc.main())
    finally:
        proc.loop.close()


if __name__ == "__main__":
    sys.exit(main())
