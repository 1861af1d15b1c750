"""Every command, registered: imports each command module (their
``@command`` registrations fill fusedb.resp.table.TABLE) and re-exports the
table's interface, so ``commands.dispatch(ctx, argv)`` runs any command.

The command modules import fusedb.resp.table, never this module: the table
imports no command module, this module imports them all, so there is no
import cycle (tests/test_hygiene.py).
"""

from fusedb.resp.table import (SYNTAX, TABLE, CommandSpec, command, dispatch,  # noqa: F401
                               error_reply, int_arg, key_args, lookup, unknown_command)

# One line per command module, alphabetical.
import fusedb.resp.connection_cmds  # noqa: E402, F401, I001
import fusedb.resp.info  # noqa: E402, F401
import fusedb.resp.keys  # noqa: E402, F401
import fusedb.resp.multi  # noqa: E402, F401
import fusedb.resp.scripting  # noqa: E402, F401
import fusedb.resp.server_cmds  # noqa: E402, F401
import fusedb.resp.strings  # noqa: E402, F401
