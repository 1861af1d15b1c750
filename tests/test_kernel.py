"""The compiled kernel against the pure-Python path: the same random operations
applied by each, in its own process (FUSEDB_NO_EXTENSIONS=1 for the pure one),
must give the same results and leave the same bytes in shared memory (the
buffers, the leaf table, the stats and the WAL ring), embedded and
multiprocess. Also: both paths at once on one database (a compiled and a pure
client attached together).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import random
import subprocess
import sys

import pytest

# The children choose their path themselves, so this runs whenever the extension
# is built, also in a test run that is itself pure Python (FUSEDB_NO_EXTENSIONS=1).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("fusedb.core._kernel") is None,
                                reason="the compiled kernel is not built")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: Small buffers and a small ring: the operations exercise the kernel's plain
#: cases and every hand-off to the pure path (ring wrap, new buffer), while no
#: buffer fills (a merge would run at a time neither path controls).
OPTIONS = {"max_key_size": 64, "max_value_size": 1024, "buffer_bytes": 1 << 20,
           "arena_bytes": 8 << 20, "wal_ring_bytes": 64 << 10, "split_keys": ["k3", "k6"]}


def random_ops(seed: int, n: int) -> list:
    rnd = random.Random(seed)
    keys = [f"k{i}" for i in range(120)] + [f"c{i}" for i in range(20)]
    ops = []
    for _ in range(n):
        key = rnd.choice(keys)
        r = rnd.random()
        if r < 0.35:
            vlen = rnd.choice([0, 1, 7, 8, 9, 16, 40, rnd.randrange(200)])
            value = "".join(rnd.choice("abc0123456789") for _ in range(vlen))
            if rnd.random() < 0.1:
                value = str(rnd.randrange(-10**6, 10**6))   # a decimal incr parses
            ttl = rnd.choice([None] * 6 + [0.5, 3.0])
            ops.append(("put", key, (value, ttl)))
        elif r < 0.6:
            ops.append(("get", key, None))
        elif r < 0.85:
            delta = rnd.choice([1, 1, -1, 5, 2**62, -(2**62), 2**63 - 1])
            ttl = rnd.choice([None, None, 1.5])      # set only if this incr creates the key
            ops.append(("incr", key, [delta, ttl]))
        elif r < 0.88:
            ops.append(("delete", key, None))
        elif r < 0.91:      # update: the kernel's read-modify-write, or its hand-offs
            ops.append(("update", key, [rnd.choice(["append", "same", "drop", "raise"]),
                                        rnd.choice([None, None, 2.0])]))
        elif r < 0.95:
            ops.append(("expire", key, rnd.choice([None, 1.0])))
        elif r < 0.999:
            ops.append(("tick", "", rnd.choice([0.25, 1.0, 2.0])))
        else:   # merge everything: later operations read the segments
            ops.append(("flush", "", None))
    return ops


def run_child(tmp_path, name: str, spec: dict, mode: str, pure: bool) -> dict:
    ops = tmp_path / "ops.json"
    ops.write_text(json.dumps(spec))
    out = tmp_path / f"{name}.pickle"
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("FUSEDB_REQUIRE_EXTENSIONS", None)
    env.pop("FUSEDB_NO_EXTENSIONS", None)
    if pure:
        env["FUSEDB_NO_EXTENSIONS"] = "1"
    subprocess.run([sys.executable, os.path.join(HERE, "kernel_child.py"), str(ops), str(out),
                    str(tmp_path / name), mode], env=env, check=True, timeout=120)
    with open(out, "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("mode", ["embedded", "multiprocess"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_results_and_bytes(tmp_path, mode, seed):
    ops = random_ops(seed, 4000)
    flushes = sum(op == "flush" for op, _key, _arg in ops)
    assert flushes
    spec = {"options": OPTIONS, "ops": ops, "flushes": flushes * 3}  # one buffer per leaf
    compiled = run_child(tmp_path, "compiled", spec, mode, pure=False)
    pure = run_child(tmp_path, "pure", spec, mode, pure=True)
    assert compiled["compiled"] and not pure["compiled"]
    # Buffers freeze only at flush() (a merge at a time neither path controls
    # would make the bytes racy): the same number on both paths.
    assert compiled["freezes"] == pure["freezes"] == spec["flushes"]
    assert compiled["results"] == pure["results"]
    assert compiled["state"].keys() == pure["state"].keys()
    for name in compiled["state"]:
        a, b = compiled["state"][name], pure["state"][name]
        if a != b:
            if isinstance(a, tuple):
                assert a[:2] == b[:2], f"{name}: ring head/LSN differ"
                a, b = a[2], b[2]
            first = next(i for i in range(min(len(a), len(b))) if a[i] != b[i])
            pytest.fail(f"{name} differs first at byte {first}")
    # The ring wrapped (the pad record is the pure path's) and errors were hit.
    assert any(state[0] > OPTIONS["wal_ring_bytes"] for name, state in compiled["state"].items()
               if name.startswith("ring"))
    assert "IntegerOverflowError" in compiled["results"]


def _env(pure: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("FUSEDB_REQUIRE_EXTENSIONS", None)
    env.pop("FUSEDB_NO_EXTENSIONS", None)
    if pure:
        env["FUSEDB_NO_EXTENSIONS"] = "1"
    return env


@pytest.mark.parametrize("router_pure", [False, True], ids=["compiled-router", "pure-router"])
def test_compiled_and_pure_clients_share_a_database(tmp_path, router_pure):
    """A compiled and a pure-Python client increment the same counters at the
    same time, on a database whose router is of either kind: no increment is
    lost and each reads what the other wrote."""
    child = os.path.join(HERE, "mixed_child.py")
    path = str(tmp_path / "db")
    router = subprocess.Popen([sys.executable, child, "router", path], env=_env(router_pure),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        hello = json.loads(router.stdout.readline())
        assert hello == {"ready": True, "compiled": not router_pure}
        n = 3000
        clients = [subprocess.Popen([sys.executable, child, "client", path, name, str(n)],
                                    env=_env(pure), stdout=subprocess.PIPE, text=True)
                   for name, pure in (("fast", False), ("slow", True))]
        try:
            outs = [json.loads(c.communicate(timeout=120)[0]) for c in clients]
        finally:
            for c in clients:
                c.kill()
                c.wait()
        assert [o["compiled"] for o in outs] == [True, False]
        for o in outs:     # each client's last put per key, read back by itself
            assert o["own"] == {f":{j}": str(max(i for i in range(n) if i % 50 == j))
                                for j in range(50)}
        check = subprocess.run(
            [sys.executable, "-c",
             "import fusedb, json, sys; db = fusedb.connect(sys.argv[1]); "
             "print(json.dumps([int(db.get(b'shared:%d' % i)) for i in range(8)] + "
             "[db.get(b'slow:7').decode(), db.get(b'fast:7').decode()])); db.close()", path],
            env=_env(not router_pure), capture_output=True, text=True, timeout=60, check=True)
        assert json.loads(check.stdout) == [2 * n] * 8 + [str(n - 43), str(n - 43)]
    finally:
        router.stdin.close()
        router.wait(timeout=60)
    assert router.returncode == 0
