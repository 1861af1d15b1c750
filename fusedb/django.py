"""A Django cache backend on FuseDB (being built: issue 13)."""
