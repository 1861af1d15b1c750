"""FuseDB side by side with the engines users would pick instead, in one run.

    python perf/bench.py [--workloads ycsb-a,counters] [--engines fusedb,rocksdict]
                         [--keys 1000000] [--ops 1000000] [--plot DIR] [--json FILE] ...

The benchmark ships with the package (fusedb/tools/bench, ``fusedb bench``,
which adds a progress bar); this script runs the same command, for the
commands of docs/perf.md. ``--help`` explains every option and column.
"""

import sys

from fusedb.tools.bench.command import main
from fusedb.tools.cli import guarded

if __name__ == "__main__":
    sys.exit(guarded(lambda: main(prog="perf/bench.py")))
