"""The router role: the process that opened a multiprocess database (fusedb.router.router)."""
