"""The Redis protocol (RESP2 and RESP3) on ``fusedb serve``.

``fusedb serve --port P`` (or ``--unixsocket PATH``) binds the listeners and
starts K server processes (``python -m fusedb.resp.process``), each attached
to the database as a client and answering the connections it accepts on the
shared listening socket: a command runs in the process that read it.
See docs/design.md, "The Redis protocol".
"""
