"""Markdown tables from ``perf/bench.py --json`` files (for docs/perf.md).

    python perf/report.py RUN.json [RUN.json ...]

The same as ``python -m fusedb.tools.bench.report`` (fusedb/tools/bench/report.py:
the columns, explained in ``fusedb bench --help`` and docs/perf.md).
"""

import sys

from fusedb.tools.bench.report import main

if __name__ == "__main__":
    sys.exit(main())
