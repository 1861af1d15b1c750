"""The database-owning process of the "client" access mode (run as a script by
access.py): opens the database given in argv multiprocess, prints "ready", and
keeps it open until SIGTERM (or until its stdin closes: the test process died),
then closes it cleanly."""

import json
import sys

import fusedb


def main() -> None:
    path, opts = sys.argv[1], json.loads(sys.argv[2])
    db = fusedb.open(path, **opts)
    try:
        print("ready", flush=True)
        sys.stdin.read()        # SIGTERM raises SystemExit here (FuseDB's handler)
    finally:
        db.close()


if __name__ == "__main__":
    main()
