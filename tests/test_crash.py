"""Crash tests with real processes: a child writes under load and reports every
acknowledged operation on a pipe; the parent SIGKILLs it at a random moment,
reopens the database and checks that its state is *exactly* the state after the
last acknowledged operation, or after the one in flight when it died. So nothing
acknowledged is lost, counters equal the sum of their increments, no deleted key
comes back and nothing half-written shows. Several rounds per mode, each on the
database the previous round left."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

import fusedb
import fusedb.shm.region

from crash_ops import expect, last_acked, settle

CHILD = os.path.join(os.path.dirname(__file__), "crash_child.py")


def run_child_and_kill(path: str, mode: str, seed: int, start: int, run_for: float) -> int:
    """Start the child at op ``start``, kill it after ``run_for`` s; return the
    number of the last acknowledged op (start - 1 if none)."""
    p = subprocess.Popen([sys.executable, CHILD, path, mode, str(seed), str(start)],
                         stdout=subprocess.PIPE)
    try:
        assert p.stdout.read(1) == b"R", "child did not open the database"
        time.sleep(run_for)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    return last_acked(p, start)


def check_round(path: str, seed: int, m: dict, start: int, last: int) -> tuple[dict, int]:
    """Open after the crash; the state must be the model after op ``last`` or after
    op ``last + 1`` (in flight). Returns that model and the next op number."""
    after_last, in_flight = expect(seed, m, start, last)
    with fusedb.open(path) as db:
        got = dict(db.scan())
    return settle(got, after_last, in_flight, last)


@pytest.mark.parametrize("mode", ["sync", "interval", "none"])
def test_sigkill_loses_nothing_acknowledged(tmp_path, mode):
    rounds(str(tmp_path / "db"), mode, seed=11, n=3)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "interval", "none"])
def test_sigkill_many_rounds(tmp_path, mode):
    rounds(str(tmp_path / "db"), mode, seed=23, n=25)


def rounds(path: str, mode: str, seed: int, n: int) -> None:
    rnd = random.Random(seed)
    m: dict = {}
    start = 0
    total_acked = 0
    for _ in range(n):
        last = run_child_and_kill(path, mode, seed, start, rnd.uniform(0.05, 0.6))
        total_acked += last - start + 1
        m, start = check_round(path, seed, m, start, last)
    assert total_acked > 0, "the child never acknowledged a write"
    shm = [e for e in os.listdir("/dev/shm") if "fusedb-" in e]
    assert not [e for e in shm if fusedb.shm.region.tag_for(path) in e]
