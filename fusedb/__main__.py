import sys

from fusedb.tools.cli import main

sys.exit(main())
