"""SIGINT and SIGTERM in every role (fusedb/runtime/signals.py): the matrix of
signal x role (embedded, router, client) x what the process does (idle in
time.sleep or blocked reading its stdin, busy on db.incr (also from a loop in
C, ``map``, where every Python frame a signal can land in is FuseDB's) or
db.put, inside ``with db.batch()``), each in a real child process, signalled once it reports
it runs. Each case asserts: the signal acts within RAISE_BOUND seconds (it used
to take 20 s and more in a busy router or client, which were almost always
inside FuseDB when the re-sent signal landed), the process exits within
EXIT_BOUND seconds with the right status (KeyboardInterrupt for SIGINT,
SystemExit 143 for SIGTERM in an owner; a client dies of SIGTERM's default
action), the database then holds every acknowledged write (and at most the
one write, or batch, in flight; whole batches, contiguous keys), an owner
closed it cleanly (no WAL left, nothing in /dev/shm) and a client is no longer
listed. The measured times are printed at the end of the module (pytest -s).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

import fusedb
from fusedb.shm import region

#: Seconds from the signal to the exception in the child (the target is 0.2 s,
#: measured here: at most 0.01 s; generous for a loaded machine; the failure
#: this tests took 20 s and more, and 0.4-1.1 s on the ``map`` loop here).
RAISE_BOUND = 0.5
#: Seconds from the signal to the child's exit, a clean close included (a
#: router's close stops and waits for its worker processes).
EXIT_BOUND = 5.0
BATCH = 10

CHILD = r"""
import collections, itertools, json, os, sys, time
import fusedb
path, role, work, report = sys.argv[1:5]
BATCH = int(sys.argv[5])
if role == "embedded":
    db = fusedb.open(path)
elif role == "router":
    db = fusedb.open(path, shards=2)
else:
    db = fusedb.connect(path)
acked = 0
try:
    if work in ("incr", "map", "batch"):
        db.put(b"counter", b"0")
    os.write(1, b"R")
    if work == "sleep":
        time.sleep(60)
    elif work == "input":
        sys.stdin.read()
    elif work == "incr":
        while True:
            acked = db.incr(b"counter")
    elif work == "map":
        # A loop in C: every Python frame the signal can land in is FuseDB's.
        collections.deque(map(db.incr, itertools.repeat(b"counter")), maxlen=0)
    elif work == "put":
        while True:
            db.put(b"k%09d" % acked, b"v%d" % acked)
            acked += 1
    elif work == "batch":
        while True:
            with db.batch() as b:
                for _ in range(BATCH):
                    b.incr(b"counter")
            acked += BATCH
except BaseException as e:
    at = time.monotonic()
    with open(report, "w") as f:
        json.dump({"acked": acked, "at": at, "exc": type(e).__name__,
                   "code": getattr(e, "code", None)}, f)
    raise
"""

TIMES: list[tuple[str, float, float]] = []


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    if not TIMES:
        return
    print("\nsignal -> exception, signal -> exit (seconds):")
    for what, r, x in TIMES:
        print(f"  {what:28s} {r:.4f} {x:.3f}")
    for role in ("embedded", "router", "client"):
        rs = [r for w, r, _ in TIMES if role in w]
        xs = [x for w, _, x in TIMES if role in w]
        if rs:
            print(f"  {role}: raise median {statistics.median(rs):.4f} max {max(rs):.4f}; "
                  f"exit median {statistics.median(xs):.3f} max {max(xs):.3f}")


def check_data(db, work: str, acked: int | None) -> None:
    """Every acknowledged write is in ``db``, and at most the one in flight more
    (``acked`` None: not known, the process was killed; the writes are still
    whole: a batch all or nothing, the keys contiguous)."""
    if work in ("map", "incr") or (work == "batch" and acked is None):
        assert int(db.get(b"counter")) > 0
        if work == "batch":
            assert int(db.get(b"counter")) % BATCH == 0, db.get(b"counter")
        elif work == "incr" and acked is not None:
            assert acked <= int(db.get(b"counter")) <= acked + 1, (db.get(b"counter"), acked)
    elif work == "batch":
        assert int(db.get(b"counter")) - acked in (0, BATCH), (db.get(b"counter"), acked)
    elif work == "put":
        keys = [k for k, _ in db.scan(prefix=b"k")]
        if acked is not None:
            assert len(keys) in (acked, acked + 1), (len(keys), acked)
        assert keys == [b"k%09d" % i for i in range(len(keys))]


def run_case(tmp_path, sig: int, role: str, work: str, client_of=None) -> None:
    path = str(tmp_path / "db")
    report = str(tmp_path / "report.json")
    p = subprocess.Popen([sys.executable, "-c", CHILD, path, role, work, report, str(BATCH)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stdout.read(1) == b"R", p.stderr.read().decode()
        if work not in ("sleep", "input"):
            time.sleep(0.3)     # well into its loop
        else:
            time.sleep(0.05)
        sent = time.monotonic()
        p.send_signal(sig)
        try:
            code = p.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 30 s after {signal.Signals(sig).name}")
        exited = time.monotonic() - sent
        err = p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            f.close()
    if sig == signal.SIGTERM and role == "client":
        # A client keeps SIGTERM's default action (fusedb/runtime/signals.py):
        # it dies at once, wherever it is; a lock it held is repaired as after
        # SIGKILL, and its client slot is dropped as a dead process's.
        assert code == -signal.SIGTERM, (code, err)
        TIMES.append(("SIGTERM client " + work, exited, exited))
        assert exited < EXIT_BOUND, f"the process exited {exited:.2f} s after the signal"
        check_data(client_of, work, None)
        assert p.pid not in [c["pid"] for c in client_of.stats()["clients"]], "still listed"
        return
    with open(report) as f:
        rep = json.load(f)
    raised = rep["at"] - sent
    TIMES.append((f"{signal.Signals(sig).name} {role} {work}", raised, exited))
    if sig == signal.SIGINT:
        assert rep["exc"] == "KeyboardInterrupt", rep
        assert code == -signal.SIGINT, (code, err)
        assert "KeyboardInterrupt" in err, err
    else:
        assert (rep["exc"], rep["code"]) == ("SystemExit", 143), rep
        assert code == 143, (code, err)
        assert "Traceback" not in err, err
    assert raised < RAISE_BOUND, f"the signal acted {raised:.2f} s after it was sent"
    assert exited < EXIT_BOUND, f"the process exited {exited:.2f} s after the signal"
    if client_of is not None:
        check_data(client_of, work, rep["acked"])
        assert p.pid not in [c["pid"] for c in client_of.stats()["clients"]], "not detached"
        return
    assert not [f for f in os.listdir(path) if f.startswith("wal-")], "not a clean close"
    assert not region.leftovers(region.tag_for(path)), "shared memory left"
    with fusedb.open(path) as db:
        check_data(db, work, rep["acked"])


SIGNALS = pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM],
                                  ids=["SIGINT", "SIGTERM"])
WORK = pytest.mark.parametrize("work", ["sleep", "input", "incr", "map", "put", "batch"])


@SIGNALS
@WORK
@pytest.mark.parametrize("role", ["embedded", "router"])
def test_an_owner_acts_on_the_signal_at_once_and_closes_cleanly(tmp_path, sig, role, work):
    run_case(tmp_path, sig, role, work)


@SIGNALS
@WORK
def test_a_client_acts_on_the_signal_at_once_and_detaches(tmp_path, sig, work):
    with fusedb.open(str(tmp_path / "db"), shards=2) as db:
        run_case(tmp_path, sig, "client", work, client_of=db)
        db.put(b"after", b"1")          # the router goes on
        assert db.get(b"after") == b"1"
