"""``python -m fusedb.tools.bench``: the benchmark (as ``fusedb bench``, without
the progress bar unless ``--progress``); also how the command starts each run's
process (``--run-one ENGINE WORKLOAD``)."""

import sys

from fusedb.tools.bench.command import main
from fusedb.tools.cli import guarded

sys.exit(guarded(lambda: main(prog="python -m fusedb.tools.bench")))
