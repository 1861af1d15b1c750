"""Code hygiene, run with the suite (so `.ci/run`, the README's test command, runs it):
ruff, the import-layer contract (import-linter, configured in pyproject.toml), no
import cycle between modules (TYPE_CHECKING imports included), and no module over
the size a reader can hold in mind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import grimp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: "No module over about 400 lines" (issue 10): a little slack over 400.
MAX_MODULE_LINES = 420


def _tool(name: str) -> str:
    path = shutil.which(name, path=os.path.dirname(sys.executable) + os.pathsep
                        + os.environ.get("PATH", ""))
    assert path, f"{name} is not installed: pip install -e '.[test]' installs it"
    return path


def test_ruff_finds_nothing():
    r = subprocess.run([_tool("ruff"), "check", "fusedb", "tests", "perf"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_layers_hold():
    r = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycle():
    # grimp reads imports statically, so imports under TYPE_CHECKING count too.
    # A package's __init__ counts as a module: one that re-exports a child which
    # imports the package back is a cycle too.
    graph = grimp.build_graph("fusedb", cache_dir=None)
    assert _cycles(graph) == []


@pytest.mark.parametrize("pkg", ["fusedb"])
def test_no_module_is_too_long(pkg):
    long = {}
    for dirpath, _dirs, files in os.walk(os.path.join(ROOT, pkg)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                with open(path) as fh:
                    n = sum(1 for _ in fh)
                if n > MAX_MODULE_LINES:
                    long[os.path.relpath(path, ROOT)] = n
    assert long == {}
