"""The side-by-side benchmark behind ``fusedb bench`` (and ``python perf/bench.py``):
FuseDB against rocksdict, lmdb, sqlite3, diskcache and Redis, in one run.

- fusedb.tools.bench.command: the command (options, what must be installed,
  one process per run, the table, the exit status);
- fusedb.tools.bench.run: one (engine, workload) run, timed per operation;
- fusedb.tools.bench.engines: one adapter per engine, with its settings;
- fusedb.tools.bench.workloads: key choosers and operation mixes;
- fusedb.tools.bench.report: the columns (named and explained once), the
  terminal table, markdown tables from ``--json`` files, charts.

Its peers, histograms and charts are optional dependencies, the ``bench``
extra: ``pip install '.[bench]'`` in the source checkout (the PyPI name
``fusedb`` is another project). docs/perf.md, "How to run".
"""
